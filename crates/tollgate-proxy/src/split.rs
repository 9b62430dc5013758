//! Weighted splits between upstream groups, for canary releases.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderName, Request};
use tollgate_core::{ConfigError, ConfigErrorKind};
use tower::Service;

/// Sends each request to one of several services, at random by weight
/// (95/5 for a canary). A request header naming a backend forces that one,
/// for testing; an unknown name is ignored.
///
/// ```
/// # use tollgate_proxy::WeightedSplit;
/// # use tower::service_fn;
/// # fn main() -> Result<(), tollgate_core::ConfigError> {
/// # let stable = service_fn(|_: http::Request<()>| async { Ok::<_, std::convert::Infallible>("v1") });
/// # let canary = stable.clone();
/// let split = WeightedSplit::new(vec![("users-v1", 95, stable), ("users-v2", 5, canary)])?
///     .override_header(http::HeaderName::from_static("x-canary"));
/// # let _ = split;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct WeightedSplit<S> {
    backends: Vec<S>,
    shared: Arc<SplitTable>,
}

#[derive(Clone, Debug)]
struct SplitTable {
    names: Box<[Arc<str>]>,
    /// Running sums of the weights; the last one is the total.
    cumulative: Box<[u64]>,
    override_header: Option<HeaderName>,
}

// === impl WeightedSplit ===

impl<S> WeightedSplit<S> {
    /// Splits between `(name, weight, service)` backends.
    ///
    /// # Errors
    ///
    /// When there is no backend, the weights add up to 0, or two backends
    /// have the same name.
    pub fn new<N>(backends: Vec<(N, u32, S)>) -> Result<Self, ConfigError>
    where
        N: Into<Arc<str>>,
    {
        let mut names: Vec<Arc<str>> = Vec::with_capacity(backends.len());
        let mut cumulative = Vec::with_capacity(backends.len());
        let mut services = Vec::with_capacity(backends.len());
        let mut total = 0u64;
        for (name, weight, svc) in backends {
            let name = name.into();
            if names.contains(&name) {
                return Err(ConfigError::new(
                    ConfigErrorKind::Duplicate,
                    format!("split backend \"{name}\" appears twice"),
                ));
            }
            total += u64::from(weight);
            names.push(name);
            cumulative.push(total);
            services.push(svc);
        }
        if total == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "a split needs at least one backend with a weight above 0",
            ));
        }
        Ok(Self {
            backends: services,
            shared: Arc::new(SplitTable {
                names: names.into_boxed_slice(),
                cumulative: cumulative.into_boxed_slice(),
                override_header: None,
            }),
        })
    }

    /// A request header whose value names the backend to use.
    #[must_use]
    pub fn override_header(mut self, name: HeaderName) -> Self {
        let table = Arc::make_mut(&mut self.shared);
        table.override_header = Some(name);
        self
    }

    fn pick<B>(&self, req: &Request<B>) -> usize {
        let table = &self.shared;
        if let Some(forced) = table
            .override_header
            .as_ref()
            .and_then(|h| req.headers().get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| table.names.iter().position(|n| &**n == v.trim()))
        {
            return forced;
        }
        let total = table.cumulative.last().copied().unwrap_or(1);
        crate::balance::by_weight(&table.cumulative, fastrand::u64(..total))
    }
}

impl<S, B> Service<Request<B>> for WeightedSplit<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Any backend may be picked, so all must be ready (as tower's Steer).
        for svc in &mut self.backends {
            if svc.poll_ready(cx)?.is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let index = self.pick(&req);
        self.backends[index].call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    fn split(
        weights: &[(&'static str, u32)],
    ) -> WeightedSplit<impl Service<Request<()>, Response = &'static str, Error = Infallible> + Clone>
    {
        let backends = weights
            .iter()
            .map(|&(name, w)| {
                (
                    name,
                    w,
                    service_fn(move |_: Request<()>| async move { Ok::<_, Infallible>(name) }),
                )
            })
            .collect();
        WeightedSplit::new(backends).unwrap()
    }

    #[tokio::test]
    async fn weights_are_honoured() {
        let svc = split(&[("a", 95), ("b", 5)]);
        let mut b = 0;
        for _ in 0..4000 {
            if svc.clone().oneshot(Request::new(())).await.unwrap() == "b" {
                b += 1;
            }
        }
        // 5% of 4000 = 200; a binomial with sd ~14 stays well inside 100..320.
        assert!((100..320).contains(&b), "{b}");
    }

    #[tokio::test]
    async fn zero_weight_is_never_picked_but_can_be_forced() {
        let svc = split(&[("stable", 1), ("canary", 0)])
            .override_header(HeaderName::from_static("x-canary"));
        for _ in 0..200 {
            assert_eq!(
                svc.clone().oneshot(Request::new(())).await.unwrap(),
                "stable"
            );
        }
        let forced = Request::builder()
            .header("x-canary", "canary")
            .body(())
            .unwrap();
        assert_eq!(svc.clone().oneshot(forced).await.unwrap(), "canary");
        let unknown = Request::builder()
            .header("x-canary", "nope")
            .body(())
            .unwrap();
        assert_eq!(svc.oneshot(unknown).await.unwrap(), "stable");
    }

    #[test]
    fn bad_splits_are_rejected() {
        let s = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(()) });
        assert!(WeightedSplit::new(vec![("a", 0, s)]).is_err());
        assert!(WeightedSplit::new(vec![("a", 1, s), ("a", 1, s)]).is_err());
        assert!(WeightedSplit::<()>::new(Vec::<(&str, u32, ())>::new()).is_err());
    }
}
