//! Measured mailboxes: an actor's address together with the gauge of messages waiting in
//! its mailbox.
//!
//! A [`Mailbox`] is the only way to reach an actor whose queue depth is exported (the
//! `RoomBroker`, the `SseFeed`). Every message it sends travels as [`Counted`], which raises
//! the gauge when it is made and lowers it when it is dropped: when the actor takes it out
//! of the mailbox, or when it never gets there (a full mailbox, a stopped actor). No
//! handler counts anything by hand, so the gauge cannot drift.
//!
//! The actor answers `Counted<M>` for each of its messages through [`counted_handlers!`],
//! which forwards to its `Handler<M>`.

use actix::dev::ToEnvelope;
use actix::prelude::*;
use prometheus::IntGauge;

/// A message on its way to a measured mailbox; the gauge goes down when it is dropped.
pub struct Counted<M> {
    msg: M,
    _depth: Depth,
}

/// One unit of a mailbox gauge, given back on drop.
struct Depth(IntGauge);

impl Drop for Depth {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<M> Counted<M> {
    /// Wraps `msg`, counting it in `depth`.
    pub fn new(msg: M, depth: &IntGauge) -> Self {
        depth.inc();
        Self {
            msg,
            _depth: Depth(depth.clone()),
        }
    }

    /// The message, counted out of the mailbox.
    pub fn into_inner(self) -> M {
        self.msg
    }
}

impl<M: Message> Message for Counted<M> {
    type Result = M::Result;
}

/// Implements `Handler<Counted<M>>` for an actor and each listed message by forwarding to
/// its `Handler<M>`.
#[macro_export]
macro_rules! counted_handlers {
    ($actor:ty: $($msg:ty),+ $(,)?) => {$(
        impl ::actix::Handler<$crate::mailbox::Counted<$msg>> for $actor {
            type Result = <$actor as ::actix::Handler<$msg>>::Result;

            fn handle(
                &mut self,
                msg: $crate::mailbox::Counted<$msg>,
                ctx: &mut Self::Context,
            ) -> Self::Result {
                <$actor as ::actix::Handler<$msg>>::handle(self, msg.into_inner(), ctx)
            }
        }
    )+};
}

/// The mailbox of `A` was full: the sender should answer `overloaded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the actor's mailbox is full")]
pub struct MailboxFull;

/// An actor's address with its mailbox gauge. Cheap to clone.
pub struct Mailbox<A: Actor> {
    addr: Addr<A>,
    depth: IntGauge,
}

impl<A: Actor> Clone for Mailbox<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            depth: self.depth.clone(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> Mailbox<A> {
    /// Starts `actor` on `arbiter` (a thread of its own); `depth` counts its mailbox.
    pub fn start(actor: A, arbiter: &actix_rt::ArbiterHandle, depth: IntGauge) -> Self
    where
        A: Send,
    {
        let addr = A::start_in_arbiter(arbiter, move |_| actor);
        Self { addr, depth }
    }

    /// Sends and awaits the reply; waits while the mailbox is full.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Counted<M>>,
        A::Context: ToEnvelope<A, Counted<M>>,
    {
        self.addr.send(Counted::new(msg, &self.depth)).await
    }

    /// Sends without waiting; [`MailboxFull`] when the mailbox is at its capacity.
    pub fn try_send<M>(&self, msg: M) -> Result<(), MailboxFull>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Counted<M>>,
        A::Context: ToEnvelope<A, Counted<M>>,
    {
        self.addr
            .try_send(Counted::new(msg, &self.depth))
            .map_err(|_| MailboxFull)
    }

    /// Sends ignoring the mailbox's capacity: for notices that must not be lost (a
    /// disconnect, a shutdown).
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Counted<M>>,
        A::Context: ToEnvelope<A, Counted<M>>,
    {
        self.addr.do_send(Counted::new(msg, &self.depth));
    }

    /// A handle that sends only `M`, for a part that must not know the actor's type.
    pub fn recipient<M>(&self) -> CountedRecipient<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Counted<M>>,
        A::Context: ToEnvelope<A, Counted<M>>,
    {
        CountedRecipient {
            recipient: self.addr.clone().recipient(),
            depth: self.depth.clone(),
        }
    }
}

/// A [`Mailbox`] narrowed to one message type.
pub struct CountedRecipient<M: Message + Send>
where
    M::Result: Send,
{
    recipient: Recipient<Counted<M>>,
    depth: IntGauge,
}

impl<M: Message + Send> Clone for CountedRecipient<M>
where
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Self {
            recipient: self.recipient.clone(),
            depth: self.depth.clone(),
        }
    }
}

impl<M: Message + Send> CountedRecipient<M>
where
    M::Result: Send,
{
    /// Sends ignoring the mailbox's capacity.
    pub fn do_send(&self, msg: M) {
        self.recipient.do_send(Counted::new(msg, &self.depth));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Actor for Echo {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Double(u32);

    impl Handler<Double> for Echo {
        type Result = u32;

        fn handle(&mut self, msg: Double, _: &mut Self::Context) -> u32 {
            msg.0 * 2
        }
    }

    counted_handlers!(Echo: Double);

    #[actix_rt::test]
    async fn the_gauge_counts_messages_in_and_out() {
        let depth = IntGauge::new("depth", "test").unwrap();
        let arbiter = actix_rt::Arbiter::new();
        let mailbox = Mailbox::start(Echo, &arbiter.handle(), depth.clone());
        for i in 0..100 {
            mailbox.do_send(Double(i));
        }
        let _ = mailbox.try_send(Double(1));
        mailbox.recipient::<Double>().do_send(Double(2));
        assert_eq!(mailbox.send(Double(21)).await.unwrap(), 42);
        // Every message before the last was handled first: the mailbox is first in, first out.
        assert_eq!(depth.get(), 0);
        arbiter.stop();
    }

    #[test]
    fn a_message_dropped_unsent_is_counted_out() {
        let depth = IntGauge::new("depth", "test").unwrap();
        let msg = Counted::new(Double(1), &depth);
        assert_eq!(depth.get(), 1);
        drop(msg);
        assert_eq!(depth.get(), 0);
    }
}
