//! The response future of [`RateLimit`](crate::RateLimit).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tollgate_core::{Problem, body::ResponseBody};
use tower_service::Service;

use crate::{
    service::{Outcome, RateHeaders, Shared},
    store::CheckFuture,
};

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit): a problem,
    /// the inner service's response with the rate-limit headers, or first
    /// a store's answer (Redis).
    pub struct ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, F> {
        Waiting {
            check: CheckFuture,
            call: Option<Box<Waiting<S, ReqB>>>,
        },
        Calling {
            #[pin]
            fut: F,
            headers: Option<RateHeaders>,
        },
        Rejected {
            problem: Option<Problem>,
        },
    }
}

/// What a call waiting for the store keeps.
struct Waiting<S, ReqB> {
    svc: S,
    req: Request<ReqB>,
    shared: Arc<Shared>,
    key: Vec<u8>,
    plan: usize,
}

// === impl ResponseFuture ===

impl<S, ReqB> ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    pub(crate) fn call(fut: S::Future, headers: Option<RateHeaders>) -> Self {
        Self {
            state: State::Calling { fut, headers },
        }
    }

    pub(crate) fn reject(problem: Problem) -> Self {
        Self {
            state: State::Rejected {
                problem: Some(problem),
            },
        }
    }

    pub(crate) fn wait(
        check: CheckFuture,
        svc: S,
        req: Request<ReqB>,
        shared: Arc<Shared>,
        key: Vec<u8>,
        plan: usize,
    ) -> Self {
        Self {
            state: State::Waiting {
                check,
                call: Some(Box::new(Waiting {
                    svc,
                    req,
                    shared,
                    key,
                    plan,
                })),
            },
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Waiting { check, call } => {
                    let result = ready!(check.as_mut().poll(cx));
                    let Some(waiting) = call.take() else {
                        // Polled again after completing: answer, never panic.
                        return Poll::Ready(Ok(Problem::internal().into_response()));
                    };
                    let Waiting {
                        mut svc,
                        req,
                        shared,
                        key,
                        plan,
                    } = *waiting;
                    match shared.finish(result, plan, &key, &req) {
                        Outcome::Pass(headers) => {
                            let fut = svc.call(req);
                            state.set(State::Calling { fut, headers });
                        }
                        Outcome::Reject(problem) => state.set(State::Rejected {
                            problem: Some(problem),
                        }),
                    }
                }
                StateProj::Calling { fut, headers } => {
                    let mut res = ready!(fut.poll(cx))?.map(ResponseBody::inner);
                    if let Some(headers) = headers.take() {
                        headers.apply(res.headers_mut());
                    }
                    return Poll::Ready(Ok(res));
                }
                StateProj::Rejected { problem } => {
                    let problem = problem.take().unwrap_or_else(Problem::internal);
                    return Poll::Ready(Ok(problem.into_response()));
                }
            }
        }
    }
}

impl<S, ReqB> std::fmt::Debug for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
