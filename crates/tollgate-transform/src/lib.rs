//! Request and response transformation for the tollgate gateway.
//!
//! - Request rules: headers (set, add, remove, rename) from templates,
//!   path and query rewrites, JSON body edits within a byte limit.
//! - Response rules: headers, status mapping, JSON field deny- and
//!   allow-lists with nested and wildcard paths, compressed bodies.
//! - Rule sets per client class ([`Classifier`], [`BySelector`]) for
//!   Backends-for-Frontends.
//! - Request limits with problem+json answers, and CORS through
//!   tower-http ([`CorsConfig`] builds its `CorsLayer`).
//!
//! Every layer has a plain-data config (`RequestRulesConfig`,
//! `ResponseRulesConfig`, [`ByClassConfig`], [`ClassifierConfig`],
//! [`CorsConfig`], [`HeaderLimitConfig`]) that deserialises with the
//! `serde` feature; unknown keys are errors.
//!
//! Bodies stream unless a rule must read them; a body a rule reads is
//! buffered up to a limit.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod class;
mod cors;
mod intern;
mod limits;
mod scan;

pub use class::{ByClassConfig, BySelector, ClassSourceConfig, Classifier, ClassifierConfig};
pub use cors::CorsConfig;
pub use limits::{
    BodyTooLarge, HeaderLimit, HeaderLimitConfig, HeaderLimitLayer, LimitFuture, LimitedBody,
    RequestBodyLimit, RequestBodyLimitLayer,
};

// --- request side (#6) ---
pub mod request;
pub mod template;

pub use request::{
    RequestBody, RequestRules, RequestRulesBuilder, RequestRulesConfig, RequestTransform,
    RequestTransformLayer,
};
pub use template::{MissingValue, OnMissing, PathParams, Template};
// --- end request side ---

// Response rules (#6): headers, status mapping, JSON body filtering.
pub mod response;
pub use response::{
    BodyRulesConfig, DEFAULT_BODY_LIMIT, FieldAdd, FieldRename, HeaderEntry, HeaderRename,
    HeaderRulesConfig, HeadersFuture, OnMalformed, OnTooLarge, ResponseHeaders,
    ResponseHeadersLayer, ResponseRules, ResponseRulesBuilder, ResponseRulesConfig,
    ResponseTransform, ResponseTransformLayer, StatusMapping, TransformedBody,
};
