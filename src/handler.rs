//! Handlers: the async callables a session runs for each message, `(topic, message)`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::topic::Topic;

/// What a handler invocation may fail with. Errors are logged and counted
/// (`handler_errors`); the session goes on receiving ([G5]).
///
/// [G5]: crate::docs::contract#g5-isolation
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The result of one handler invocation.
pub type HandlerResult = Result<(), HandlerError>;

/// What a handler's future may return: `()` or a `Result` whose error converts into
/// [`HandlerError`].
pub trait IntoHandlerResult {
    /// Converts into the common form.
    fn into_handler_result(self) -> HandlerResult;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> HandlerResult {
        Ok(())
    }
}

impl<E: Into<HandlerError>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> HandlerResult {
        self.map_err(Into::into)
    }
}

/// Takes its arguments by reference and clones them straight into the user's closure, so a
/// session's delivery copies the topic and the message once, not once per call frame on the
/// way. ([`Handler::call`], which takes them owned, clones them once more.)
type HandlerFn = dyn Fn(&Topic, &Bytes) -> BoxFuture<'static, HandlerResult> + Send + Sync;

/// An async callable `(topic, message)`, registered per (session, topic).
///
/// ```
/// use fanout::Handler;
///
/// let handler = Handler::new(|topic, message| async move {
///     println!("{topic}: {} bytes", message.len());
/// });
/// # let _ = handler;
/// ```
///
/// The closure's synchronous part (what runs before it returns its future) is the start of an
/// invocation, so an operation that ends the session waits for a synchronous part already
/// begun ([G2]): `unsubscribe_all` of its id, the last `unsubscribe_topic` of its id, and a
/// subscribe with its id after a broadcast disconnected it. Keep the synchronous part short
/// and do the work in the future. It may end its own session; it must not wait for a thread
/// that is ending its session (for a lock that thread holds, say), and two synchronous parts
/// that end each other's sessions never return. Operations on other ids never wait for it.
///
/// [G2]: crate::docs::contract#g2-no-delivery-after-unsubscribe
#[derive(Clone)]
pub struct Handler {
    call: Arc<HandlerFn>,
}

impl Handler {
    /// Wraps an async closure. Its future may return `()` or `Result<(), E>`.
    pub fn new<F, Fut, R>(f: F) -> Handler
    where
        F: Fn(Topic, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult + 'static,
    {
        Handler {
            call: Arc::new(move |topic: &Topic, message: &Bytes| {
                f(topic.clone(), message.clone())
                    .map(IntoHandlerResult::into_handler_result)
                    .boxed()
            }),
        }
    }

    /// A handler that decodes each message as JSON into `T` first. A message that does not
    /// decode is a handler error (logged and counted); the session goes on.
    #[cfg(feature = "json")]
    pub fn json<T, F, Fut, R>(f: F) -> Handler
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(Topic, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult + 'static,
    {
        let f = Arc::new(f);
        Handler::new(move |topic: Topic, message: Bytes| {
            let decoded = serde_json::from_slice::<T>(&message);
            let f = Arc::clone(&f);
            async move {
                match decoded {
                    Ok(value) => f(topic, value).await.into_handler_result(),
                    Err(e) => Err(HandlerError::from(format!(
                        "message on `{topic}` is not the expected JSON: {e}"
                    ))),
                }
            }
        })
    }

    /// Runs the handler once. Its closure gets clones of `topic` and `message`, and these are
    /// dropped on return: one clone more than a delivery to a session pays.
    pub fn call(&self, topic: Topic, message: Bytes) -> BoxFuture<'static, HandlerResult> {
        (self.call)(&topic, &message)
    }

    /// Runs the handler once with clones of `topic` and `message`, made where the user's
    /// closure takes them.
    pub(crate) fn call_with_clones(
        &self,
        topic: &Topic,
        message: &Bytes,
    ) -> BoxFuture<'static, HandlerResult> {
        (self.call)(topic, message)
    }
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler")
    }
}
