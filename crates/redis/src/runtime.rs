//! The runtime seam: timers, call timeouts and background tasks on tokio or smol.
//!
//! The Redis client picks its runtime by the same rule as [`Rt::current`] (tokio when called
//! inside a tokio runtime, smol otherwise), so its connections, our timers and our background
//! tasks always agree. Every Redis future is polled inside [`Rt::enter`], so a spawner of the
//! user's that is not tokio's still works with the tokio client.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::Error;

/// The runtime the repository was connected on.
#[derive(Clone)]
pub(crate) enum Rt {
    #[cfg(feature = "tokio")]
    Tokio(tokio::runtime::Handle),
    #[cfg(feature = "smol")]
    Smol,
}

impl Rt {
    /// The runtime to use from here: tokio's current runtime if there is one (feature `tokio`),
    /// otherwise smol (feature `smol`).
    pub(crate) fn current() -> Result<Self, Error> {
        #[cfg(feature = "tokio")]
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Ok(Self::Tokio(handle));
        }
        #[cfg(feature = "smol")]
        {
            Ok(Self::Smol)
        }
        #[cfg(not(feature = "smol"))]
        {
            Err(Error::new(crate::error::ErrorKind::Unavailable).detail(
                "no tokio runtime is running: connect from inside one, or enable the `smol` feature",
            ))
        }
    }

    /// Runs `future` in the background on this runtime.
    pub(crate) fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
        match self {
            #[cfg(feature = "tokio")]
            Self::Tokio(handle) => drop(handle.spawn(future)),
            #[cfg(feature = "smol")]
            Self::Smol => smol::spawn(future).detach(),
        }
    }

    /// Polls `future` with this runtime's context entered.
    pub(crate) async fn enter<F: Future>(&self, future: F) -> F::Output {
        let mut future = pin!(future);
        poll_fn(|cx| {
            let _entered = self.entered();
            future.as_mut().poll(cx)
        })
        .await
    }

    /// `future`'s output, or a [`Timeout`](ErrorKind::Timeout) error once `after` has passed.
    pub(crate) async fn timeout<T>(
        &self,
        after: Duration,
        future: impl Future<Output = T>,
    ) -> Result<T, Error> {
        let mut future = pin!(future);
        let mut timer = self.sleep_until(Instant::now() + after);
        poll_fn(|cx| {
            let _entered = self.entered();
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(output));
            }
            match timer.poll_elapsed(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Error::timeout(after))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// A timer that elapses at `deadline`; it can be moved with [`Sleep::reset`].
    pub(crate) fn sleep_until(&self, deadline: Instant) -> Sleep {
        let timer = match self {
            #[cfg(feature = "tokio")]
            Self::Tokio(handle) => {
                let _entered = handle.enter();
                Timer::Tokio(
                    Box::pin(tokio::time::sleep_until(deadline.into())),
                    handle.clone(),
                )
            }
            #[cfg(feature = "smol")]
            Self::Smol => Timer::Smol(smol::Timer::at(deadline)),
        };
        Sleep { deadline, timer }
    }

    /// Sleeps for `duration`.
    pub(crate) async fn sleep(&self, duration: Duration) {
        let mut timer = self.sleep_until(Instant::now() + duration);
        poll_fn(|cx| timer.poll_elapsed(cx)).await;
    }

    /// Tokio's context, entered until the guard drops (nothing to enter on smol).
    fn entered(&self) -> Entered<'_> {
        match self {
            #[cfg(feature = "tokio")]
            Self::Tokio(handle) => Some(handle.enter()),
            #[cfg(feature = "smol")]
            Self::Smol => Entered::default(),
        }
    }
}

/// A guard keeping the runtime's context entered.
#[cfg(feature = "tokio")]
type Entered<'a> = Option<tokio::runtime::EnterGuard<'a>>;
#[cfg(not(feature = "tokio"))]
type Entered<'a> = std::marker::PhantomData<&'a ()>;

impl fmt::Debug for Rt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            #[cfg(feature = "tokio")]
            Self::Tokio(_) => "tokio",
            #[cfg(feature = "smol")]
            Self::Smol => "smol",
        })
    }
}

/// A resettable timer. It elapses once the clock has passed its deadline, whatever the
/// underlying timer says, so a timer that already fired can be polled again safely.
pub(crate) struct Sleep {
    deadline: Instant,
    timer: Timer,
}

enum Timer {
    #[cfg(feature = "tokio")]
    Tokio(Pin<Box<tokio::time::Sleep>>, tokio::runtime::Handle),
    #[cfg(feature = "smol")]
    Smol(smol::Timer),
}

impl Sleep {
    /// Moves the deadline (earlier or later).
    pub(crate) fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        match &mut self.timer {
            #[cfg(feature = "tokio")]
            Timer::Tokio(sleep, handle) => {
                let _entered = handle.enter();
                sleep.as_mut().reset(deadline.into());
            }
            #[cfg(feature = "smol")]
            Timer::Smol(timer) => timer.set_at(deadline),
        }
    }

    /// Ready once the deadline has passed; otherwise registers `cx`'s waker for it.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let fired = match &mut self.timer {
            #[cfg(feature = "tokio")]
            Timer::Tokio(sleep, handle) => {
                let _entered = handle.enter();
                sleep.as_mut().poll(cx).is_ready()
            }
            #[cfg(feature = "smol")]
            Timer::Smol(timer) => Pin::new(timer).poll(cx).is_ready(),
        };
        if fired || Instant::now() >= self.deadline {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
