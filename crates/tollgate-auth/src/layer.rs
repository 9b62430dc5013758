//! [`AuthLayer`]: composes methods, checks scopes and roles, attaches the
//! [`Identity`], forwards it as headers and strips credentials.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, request::Parts};
use pin_project_lite::pin_project;
use tollgate_core::{Identity, Observed, Problem, RequestId, RouteName, audit, body::ResponseBody};
use tower::{Layer, Service};

use crate::{AuthError, Authenticator, CredentialSource, Scheme, Verdict, VerdictFuture};

/// Which scopes or roles a route needs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Requirement {
    items: Vec<Arc<str>>,
    all: bool,
}

impl Requirement {
    /// Every one of `items` is needed.
    pub fn all<I: IntoIterator<Item = S>, S: Into<Arc<str>>>(items: I) -> Self {
        Self {
            items: items.into_iter().map(Into::into).collect(),
            all: true,
        }
    }

    /// At least one of `items` is needed.
    pub fn any<I: IntoIterator<Item = S>, S: Into<Arc<str>>>(items: I) -> Self {
        Self {
            items: items.into_iter().map(Into::into).collect(),
            all: false,
        }
    }

    fn satisfied_by(&self, granted: &[Arc<str>]) -> bool {
        let has = |item: &Arc<str>| granted.iter().any(|g| g == item);
        if self.all {
            self.items.iter().all(has)
        } else {
            self.items.is_empty() || self.items.iter().any(has)
        }
    }

    fn joined(&self) -> String {
        self.items.join(" ")
    }
}

/// The headers that carry the identity to the upstream.
///
/// Whatever the client sent under these names is removed first, on every
/// request that passes the layer, authenticated or not: otherwise a client
/// could claim to be anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct IdentityHeaders {
    pub(crate) subject: Option<HeaderName>,
    pub(crate) consumer: Option<HeaderName>,
    pub(crate) scopes: Option<HeaderName>,
    pub(crate) roles: Option<HeaderName>,
    pub(crate) plan: Option<HeaderName>,
}

impl Default for IdentityHeaders {
    /// `X-User-Id`, `X-Consumer` and `X-Scopes`.
    fn default() -> Self {
        Self {
            subject: Some(HeaderName::from_static("x-user-id")),
            consumer: Some(HeaderName::from_static("x-consumer")),
            scopes: Some(HeaderName::from_static("x-scopes")),
            roles: None,
            plan: None,
        }
    }
}

impl IdentityHeaders {
    /// No identity headers.
    pub fn none() -> Self {
        Self {
            subject: None,
            consumer: None,
            scopes: None,
            roles: None,
            plan: None,
        }
    }

    /// The header for the subject (`X-User-Id` by default).
    pub fn subject(mut self, name: HeaderName) -> Self {
        self.subject = Some(name);
        self
    }

    /// The header for the consumer (`X-Consumer` by default).
    pub fn consumer(mut self, name: HeaderName) -> Self {
        self.consumer = Some(name);
        self
    }

    /// The header for the space-separated scopes (`X-Scopes` by default).
    pub fn scopes(mut self, name: HeaderName) -> Self {
        self.scopes = Some(name);
        self
    }

    /// A header for the space-separated roles (none by default).
    pub fn roles(mut self, name: HeaderName) -> Self {
        self.roles = Some(name);
        self
    }

    /// A header for the plan (none by default).
    pub fn plan(mut self, name: HeaderName) -> Self {
        self.plan = Some(name);
        self
    }

    /// The configured header names.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        [
            &self.subject,
            &self.consumer,
            &self.scopes,
            &self.roles,
            &self.plan,
        ]
        .into_iter()
        .flatten()
    }

    /// Removes every configured header from `headers`.
    pub fn strip(&self, headers: &mut HeaderMap) {
        for name in self.names() {
            headers.remove(name);
        }
    }

    fn write(&self, identity: &Identity, headers: &mut HeaderMap) {
        let join = |items: &[Arc<str>]| items.join(" ");
        let values = [
            (
                &self.subject,
                identity.subject.as_deref().map(str::to_owned),
            ),
            (
                &self.consumer,
                identity.consumer.as_deref().map(str::to_owned),
            ),
            (&self.scopes, Some(join(&identity.scopes))),
            (&self.roles, Some(join(&identity.roles))),
            (&self.plan, identity.plan.as_deref().map(str::to_owned)),
        ];
        for (name, value) in values {
            let (Some(name), Some(value)) = (name, value) else {
                continue;
            };
            // A claim with control characters cannot be a header value;
            // it is left out rather than forwarded mangled.
            match HeaderValue::try_from(value) {
                Ok(value) => {
                    headers.insert(name, value);
                }
                Err(_) => {
                    tracing::debug!(header = %name, "identity value is not a valid header value")
                }
            }
        }
    }
}

/// Authenticates requests with one or more methods and authorizes them by
/// scope or role.
///
/// - Methods are tried in order. The first that accepts the request's
///   credential wins; a credential that is present but invalid is refused
///   (401, or 503 when it could not be checked), never treated as
///   anonymous.
/// - Without any credential: 401, or, for an [optional](Self::optional)
///   layer, the request passes without an identity.
/// - Scope and role requirements answer 403 with
///   `error="insufficient_scope"`.
/// - The [`Identity`] goes into the request extensions (handlers extract
///   it), optionally into headers for the upstream, and into the audit
///   trail. `Authorization` (and any other credential header) is removed
///   before the request goes on, unless [kept](Self::keep_credentials).
///
/// ```
/// use axum::{Router, routing::get};
/// use tollgate_auth::{ApiKeyAuth, AuthLayer, Consumer, JwtAuth, Issuer, JwtKey, MemoryApiKeyStore, Requirement};
///
/// let jwt = JwtAuth::builder()
///     .issuer(Issuer::any().key(JwtKey::hmac("secret")))
///     .build()?;
/// let keys = MemoryApiKeyStore::new();
/// keys.insert("k-1", Consumer::new("partner").scopes(["orders:read"]));
///
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "orders" }))
///     .layer(
///         AuthLayer::new(jwt)
///             .or(ApiKeyAuth::new(keys))
///             .require_scopes(Requirement::all(["orders:read"])),
///     );
/// # Ok::<(), tollgate_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

#[derive(Clone, Default)]
struct Shared {
    methods: Vec<Arc<dyn Authenticator>>,
    schemes: Vec<Scheme>,
    optional: bool,
    keep_credentials: bool,
    credentials: Vec<CredentialSource>,
    forward: Option<IdentityHeaders>,
    scopes: Option<Requirement>,
    roles: Option<Requirement>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("methods", &self.methods)
            .field("optional", &self.optional)
            .field("keep_credentials", &self.keep_credentials)
            .field("forward", &self.forward)
            .field("scopes", &self.scopes)
            .field("roles", &self.roles)
            .finish()
    }
}

impl AuthLayer {
    /// Authenticates with `method`.
    pub fn new(method: impl Authenticator) -> Self {
        Self::from_shared(Shared::default()).or(method)
    }

    /// Only checks scopes and roles of an identity an earlier layer
    /// attached; 401 when there is none.
    pub fn require(
        requirement_scopes: Option<Requirement>,
        requirement_roles: Option<Requirement>,
    ) -> Self {
        Self::from_shared(Shared {
            schemes: vec![Scheme::Bearer],
            keep_credentials: true,
            scopes: requirement_scopes,
            roles: requirement_roles,
            ..Shared::default()
        })
    }

    fn from_shared(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    fn update(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.shared);
        f(&mut shared);
        Self::from_shared(shared)
    }

    /// Also accepts `method` (tried after the earlier ones).
    pub fn or(self, method: impl Authenticator) -> Self {
        self.update(|s| {
            let scheme = method.scheme();
            if !s.schemes.contains(&scheme) {
                s.schemes.push(scheme);
            }
            for source in method.credential_sources() {
                if !s.credentials.contains(&source) {
                    s.credentials.push(source);
                }
            }
            s.methods.push(Arc::new(method));
        })
    }

    /// Lets requests without any credential through, without an identity.
    /// Invalid credentials are still refused.
    pub fn optional(self) -> Self {
        self.update(|s| s.optional = true)
    }

    /// Keeps `Authorization` (and other credential headers) on the request
    /// to the upstream. They are removed by default.
    pub fn keep_credentials(self, keep: bool) -> Self {
        self.update(|s| s.keep_credentials = keep)
    }

    /// Forwards the identity to the upstream in these headers, after
    /// removing any the client sent.
    pub fn forward_identity(self, headers: IdentityHeaders) -> Self {
        self.update(|s| s.forward = Some(headers))
    }

    /// Requires scopes (403 `insufficient_scope` otherwise).
    pub fn require_scopes(self, requirement: Requirement) -> Self {
        self.update(|s| s.scopes = Some(requirement))
    }

    /// Requires roles (403 otherwise).
    pub fn require_roles(self, requirement: Requirement) -> Self {
        self.update(|s| s.roles = Some(requirement))
    }

    /// The headers this layer forwards the identity in. A gateway strips
    /// them from every client request, on every route, so no route can be
    /// reached with a forged identity.
    #[must_use]
    pub fn identity_header_names(&self) -> Vec<HeaderName> {
        self.shared
            .forward
            .as_ref()
            .map(|f| f.names().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether every method can judge requests (keys loaded).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.shared.methods.iter().all(|m| m.is_ready())
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Authenticate<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Authenticate<S> {
    tollgate_core::inner_service_accessors!();
}

/// The outcome of running the methods from some index on.
enum Step {
    /// An identity, or `None` for an anonymous request on an optional layer.
    Done(Result<Option<Identity>, AuthError>),
    /// A method needs I/O; resume at `next` with the rejection seen so far.
    Wait(VerdictFuture, usize, Option<AuthError>),
}

impl Shared {
    fn run(&self, parts: &Parts, start: usize, mut rejected: Option<AuthError>) -> Step {
        for (i, method) in self.methods.iter().enumerate().skip(start) {
            match method.authenticate(parts) {
                Verdict::Absent => {}
                Verdict::Accept(identity) => return Step::Done(Ok(Some(identity))),
                Verdict::Reject(error) => {
                    rejected.get_or_insert(error);
                }
                Verdict::Pending(future) => return Step::Wait(future, i + 1, rejected),
            }
        }
        Step::Done(self.conclude(parts, rejected))
    }

    fn conclude(
        &self,
        parts: &Parts,
        rejected: Option<AuthError>,
    ) -> Result<Option<Identity>, AuthError> {
        if let Some(error) = rejected {
            return Err(error);
        }
        if self.methods.is_empty() {
            // A requirement-only layer: the identity comes from before.
            return parts
                .extensions
                .get::<Identity>()
                .cloned()
                .map(Some)
                .ok_or(AuthError::Missing);
        }
        if self.optional {
            Ok(None)
        } else {
            Err(AuthError::Missing)
        }
    }

    fn authorize(&self, identity: Option<&Identity>) -> Result<(), AuthError> {
        if self.scopes.is_none() && self.roles.is_none() {
            return Ok(());
        }
        let Some(identity) = identity else {
            return Err(AuthError::Missing);
        };
        if let Some(scopes) = &self.scopes
            && !scopes.satisfied_by(&identity.scopes)
        {
            return Err(AuthError::InsufficientScope);
        }
        if let Some(roles) = &self.roles
            && !roles.satisfied_by(&identity.roles)
        {
            return Err(AuthError::InsufficientRole);
        }
        Ok(())
    }

    /// Applies a decision to the request: the identity and headers on
    /// success, the problem to answer with on failure. Every decision is
    /// audited.
    fn apply(
        &self,
        parts: &mut Parts,
        decision: Result<Option<Identity>, AuthError>,
    ) -> Option<Problem> {
        let decision = decision.and_then(|identity| {
            self.authorize(identity.as_ref())?;
            Ok(identity)
        });
        let request_id = parts.extensions.get::<RequestId>();
        let route = parts.extensions.get::<RouteName>().map(RouteName::as_str);
        match decision {
            Ok(identity) => {
                let subject = identity
                    .as_ref()
                    .and_then(|i| i.subject.as_deref().or(i.consumer.as_deref()));
                let how = identity
                    .as_ref()
                    .and_then(|i| i.method)
                    .map_or("anonymous", tollgate_core::AuthMethod::as_str);
                audit::event(request_id, subject, route, "allowed", how);
                if !self.keep_credentials {
                    for source in &self.credentials {
                        source.strip(parts);
                    }
                }
                if let Some(forward) = &self.forward {
                    forward.strip(&mut parts.headers);
                }
                if let Some(identity) = identity {
                    if let Some(forward) = &self.forward {
                        forward.write(&identity, &mut parts.headers);
                    }
                    if let Some(observed) = parts.extensions.get::<Observed>() {
                        observed.set_identity(&identity);
                    }
                    parts.extensions.insert(identity);
                }
                None
            }
            Err(error) => {
                let subject = parts
                    .extensions
                    .get::<Identity>()
                    .and_then(|i| i.subject.as_deref());
                let outcome = if error.is_unavailable() {
                    "unavailable"
                } else {
                    "denied"
                };
                audit::event(request_id, subject, route, outcome, error.reason());
                let scope = match error {
                    AuthError::InsufficientScope => self.scopes.as_ref().map(Requirement::joined),
                    // RFC 6750's `scope` names scopes only.
                    _ => None,
                };
                Some(
                    error
                        .to_problem(&self.schemes, scope.as_deref())
                        .for_parts(parts),
                )
            }
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        match self.shared.run(&parts, 0, None) {
            Step::Done(decision) => match self.shared.apply(&mut parts, decision) {
                None => ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body))),
                Some(problem) => ResponseFuture::problem(problem),
            },
            Step::Wait(future, next, rejected) => {
                // The inner service was made ready for this call; the clone
                // takes its place for the next one (tower's usual swap).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Checking {
                        future,
                        pending: Some(PendingCall {
                            inner,
                            shared: Arc::clone(&self.shared),
                            parts,
                            body,
                            next,
                            rejected,
                        }),
                    },
                }
            }
        }
    }
}

struct PendingCall<S, B> {
    inner: S,
    shared: Arc<Shared>,
    parts: Parts,
    body: B,
    next: usize,
    rejected: Option<AuthError>,
}

pin_project! {
    /// The response future of [`Authenticate`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Checking {
            future: VerdictFuture,
            pending: Option<PendingCall<S, B>>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Problem {
            problem: Option<Problem>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    fn problem(problem: Problem) -> Self {
        Self {
            state: State::Problem {
                problem: Some(problem),
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Inner { future } => {
                    return future
                        .poll(cx)
                        .map(|res| res.map(|res| res.map(ResponseBody::inner)));
                }
                StateProj::Problem { problem } => {
                    return match problem.take() {
                        Some(problem) => Poll::Ready(Ok(problem.into_response())),
                        // Polled after completion.
                        None => Poll::Pending,
                    };
                }
                StateProj::Checking { future, pending } => {
                    let verdict = ready!(future.as_mut().poll(cx));
                    let Some(mut call) = pending.take() else {
                        return Poll::Pending;
                    };
                    let step = match verdict {
                        Ok(identity) => Step::Done(Ok(Some(identity))),
                        Err(error) => {
                            let rejected = call.rejected.or(Some(error));
                            call.shared.run(&call.parts, call.next, rejected)
                        }
                    };
                    match step {
                        Step::Done(decision) => {
                            match call.shared.apply(&mut call.parts, decision) {
                                None => State::Inner {
                                    future: call
                                        .inner
                                        .call(Request::from_parts(call.parts, call.body)),
                                },
                                Some(problem) => State::Problem {
                                    problem: Some(problem),
                                },
                            }
                        }
                        Step::Wait(future, next, rejected) => {
                            call.next = next;
                            call.rejected = rejected;
                            State::Checking {
                                future,
                                pending: Some(call),
                            }
                        }
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("auth::ResponseFuture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_any_and_all() {
        let granted: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        assert!(Requirement::all(["a", "b"]).satisfied_by(&granted));
        assert!(!Requirement::all(["a", "c"]).satisfied_by(&granted));
        assert!(Requirement::any(["c", "b"]).satisfied_by(&granted));
        assert!(!Requirement::any(["c"]).satisfied_by(&granted));
        assert!(Requirement::all(Vec::<String>::new()).satisfied_by(&[]));
    }
}
