//! Verification keys: static secrets, PEM files, JWK and JWKS documents.
//! Every key carries an allow-list of algorithms within its family, so a
//! token can never pick an algorithm the key was not meant for.

use std::{path::Path, sync::Arc};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use tollgate_core::{ConfigError, ConfigErrorKind};

/// Which kind of key, and so which algorithms it can ever verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec256,
    Ec384,
    /// An EC key from PEM, whose curve is only known to the verifier.
    Ec,
    Ed,
}

impl Family {
    fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            Self::Hmac => &[HS256, HS384, HS512],
            Self::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            Self::Ec256 => &[ES256],
            Self::Ec384 => &[ES384],
            Self::Ec => &[ES256, ES384],
            Self::Ed => &[EdDSA],
        }
    }
}

/// One verification key: its material, an optional `kid`, and the
/// algorithms it accepts.
///
/// An HMAC secret only ever verifies HS256/384/512 and a public key only
/// its own family, whatever a token's header says: this is what stops the
/// algorithm-confusion attack (an HS256 token "signed" with an RSA public
/// key as the secret).
#[derive(Clone)]
pub struct JwtKey {
    kid: Option<Arc<str>>,
    key: DecodingKey,
    family: Family,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    fn new(key: DecodingKey, family: Family) -> Self {
        Self {
            kid: None,
            key,
            family,
            algorithms: family.algorithms().to_vec(),
        }
    }

    /// An HMAC shared secret (HS256, HS384, HS512).
    #[must_use]
    pub fn hmac(secret: impl AsRef<[u8]>) -> Self {
        Self::new(DecodingKey::from_secret(secret.as_ref()), Family::Hmac)
    }

    /// An RSA public key in PEM (RS256/384/512, PS256/384/512).
    ///
    /// # Errors
    ///
    /// When the PEM is not an RSA public key.
    pub fn rsa_pem(pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        DecodingKey::from_rsa_pem(pem.as_ref())
            .map(|k| Self::new(k, Family::Rsa))
            .map_err(|e| invalid(format!("not an RSA public key in PEM: {e}")))
    }

    /// An EC public key in PEM (ES256 for P-256, ES384 for P-384).
    ///
    /// # Errors
    ///
    /// When the PEM is not an EC public key.
    pub fn ec_pem(pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        DecodingKey::from_ec_pem(pem.as_ref())
            .map(|k| Self::new(k, Family::Ec))
            .map_err(|e| invalid(format!("not an EC public key in PEM: {e}")))
    }

    /// An Ed25519 public key in PEM (EdDSA).
    ///
    /// # Errors
    ///
    /// When the PEM is not an Ed25519 public key.
    pub fn ed_pem(pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        DecodingKey::from_ed_pem(pem.as_ref())
            .map(|k| Self::new(k, Family::Ed))
            .map_err(|e| invalid(format!("not an Ed25519 public key in PEM: {e}")))
    }

    /// A public key read from a PEM file; its kind (RSA, EC or Ed25519)
    /// is detected.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or holds no supported public key.
    pub fn pem_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        Self::rsa_pem(&pem)
            .or_else(|_| Self::ec_pem(&pem))
            .or_else(|_| Self::ed_pem(&pem))
            .map_err(|_| {
                invalid(format!(
                    "{}: no RSA, EC or Ed25519 public key in PEM",
                    path.display()
                ))
            })
    }

    /// A key from one JWK (RFC 7517). Its `kid` and `alg` are kept; keys
    /// with `"use": "enc"` are refused.
    ///
    /// # Errors
    ///
    /// When the JWK is invalid, an encryption key, or of an unsupported type.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, ConfigError> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err(invalid(
                "an encryption key (\"use\": \"enc\") cannot verify tokens",
            ));
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::OctetKey(_) => Family::Hmac,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Family::Ec256,
                EllipticCurve::P384 => Family::Ec384,
                _ => return Err(invalid("unsupported EC curve")),
            },
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => Family::Ed,
                _ => return Err(invalid("unsupported OKP curve")),
            },
            _ => return Err(invalid("unsupported key type")),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("invalid JWK: {e}")))?;
        let mut key = Self::new(key, family);
        key.kid = jwk.common.key_id.as_deref().map(Arc::from);
        if let Some(alg) = jwk.common.key_algorithm {
            let alg = signing_algorithm(alg)
                .ok_or_else(|| invalid("the JWK's \"alg\" is not a signing algorithm"))?;
            key = key.algorithms([alg])?;
        }
        Ok(key)
    }

    /// Sets the key id that tokens name in their `kid` header.
    #[must_use]
    pub fn kid(mut self, kid: impl Into<Arc<str>>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Narrows the algorithms this key accepts.
    ///
    /// # Errors
    ///
    /// When an algorithm is outside the key's family (e.g. HS256 for an
    /// RSA key), or the list is empty.
    pub fn algorithms<I>(mut self, algorithms: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = Algorithm>,
    {
        let algorithms: Vec<_> = algorithms.into_iter().collect();
        if algorithms.is_empty() {
            return Err(invalid("a key needs at least one algorithm"));
        }
        if let Some(alg) = algorithms
            .iter()
            .find(|a| !self.family.algorithms().contains(a))
        {
            return Err(invalid(format!(
                "{alg:?} cannot be used with this key (it accepts {:?})",
                self.family.algorithms()
            )));
        }
        self.algorithms = algorithms;
        Ok(self)
    }

    pub(crate) fn kid_str(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    Some(match alg {
        K::HS256 => Algorithm::HS256,
        K::HS384 => Algorithm::HS384,
        K::HS512 => Algorithm::HS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidValue, message)
}

/// The keys of one issuer at one moment.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<JwtKey>,
}

impl KeySet {
    pub(crate) fn new(keys: Vec<JwtKey>) -> Self {
        Self { keys }
    }

    /// Parses a JWKS document. Keys that cannot verify signatures (other
    /// types, encryption keys) are skipped, so one odd key does not throw
    /// the whole set away; a document with no usable key is an error.
    pub(crate) fn from_jwks(body: &[u8]) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let keys: Vec<JwtKey> = doc
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| JwtKey::from_jwk(&jwk).ok())
            .collect();
        if keys.is_empty() {
            return Err("the JWKS document has no usable signing key".into());
        }
        Ok(Self { keys })
    }

    pub(crate) fn into_keys(self) -> Vec<JwtKey> {
        self.keys
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid_str() == Some(kid))
    }

    /// The keys to try for a token: those with its `kid`, or, when none
    /// has it (or the token names none), the keys that declare no `kid`
    /// themselves (a key without an id is a candidate for any token, as
    /// a single configured secret is). The algorithm is checked after.
    pub(crate) fn candidates<'a>(&'a self, kid: Option<&'a str>) -> Vec<&'a JwtKey> {
        if let Some(kid) = kid {
            let named: Vec<_> = self
                .keys
                .iter()
                .filter(|k| k.kid_str() == Some(kid))
                .collect();
            if !named.is_empty() {
                return named;
            }
            return self.keys.iter().filter(|k| k.kid_str().is_none()).collect();
        }
        self.keys.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_allow_lists_stay_within_the_family() {
        let key = JwtKey::hmac("secret");
        assert!(key.accepts(Algorithm::HS256));
        assert!(!key.accepts(Algorithm::RS256));
        assert!(JwtKey::hmac("s").algorithms([Algorithm::RS256]).is_err());
        assert!(JwtKey::hmac("s").algorithms([]).is_err());
        let key = JwtKey::hmac("s").algorithms([Algorithm::HS512]).unwrap();
        assert!(!key.accepts(Algorithm::HS256));
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"a","alg":"HS256"},
            {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB","kid":"enc"},
            {"kty":"weird","kid":"w"},
            "not an object"
        ]}"#;
        let set = KeySet::from_jwks(doc).unwrap();
        assert_eq!(set.len(), 1);
        let key = set.candidates(Some("a"))[0];
        assert!(key.accepts(Algorithm::HS256));
        assert!(!key.accepts(Algorithm::HS384));
        assert!(set.candidates(Some("enc")).is_empty());
    }

    #[test]
    fn garbage_jwks_is_an_error() {
        assert!(KeySet::from_jwks(b"<html>").is_err());
        assert!(KeySet::from_jwks(br#"{"keys":[]}"#).is_err());
        assert!(KeySet::from_jwks(br#"{"keys":[{"kty":"oct"}]}"#).is_err());
    }
}
