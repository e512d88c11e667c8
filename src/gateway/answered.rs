//! A response that holds a guard until hyper is done with its body: a send's answer keeps
//! the device's own `/sync` waiting until the answer is on its way (see
//! `Messaging::own_sends_answered`), so the event's copy never overtakes it.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use crate::util::InFlightGuard;

/// `response`, with `guard` dropped only once its body has been handed to the connection.
pub struct Answered<T>(pub T, pub InFlightGuard);

impl<T: IntoResponse> IntoResponse for Answered<T> {
    fn into_response(self) -> Response {
        let Answered(response, guard) = self;
        response.into_response().map(|inner| {
            Body::new(Guarded {
                inner,
                _guard: guard,
            })
        })
    }
}

struct Guarded {
    inner: Body,
    _guard: InFlightGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
