//! [`Subject`]: a shared handle on a [`RawSubject`].

use std::fmt;
use std::sync::{Arc, Weak};

use crate::raw::{ListenerId, RawSubject};
use crate::stream::SubjectStream;
use crate::subscription::{Subscription, Unsubscribe};
use crate::sync::{AtomicUsize, Ordering};

/// What handles, subscriptions and streams point to.
pub(crate) struct Shared<T> {
    pub(crate) raw: RawSubject<T>,
    /// Live [`Subject`] handles; the subject closes when it reaches zero.
    handles: AtomicUsize,
}

impl<T: Send + Sync + 'static> Unsubscribe for Shared<T> {
    fn unsubscribe(&self, id: u64) {
        if let Some(id) = ListenerId::from_raw(id) {
            self.raw.unlisten(id);
        }
    }
}

/// A multicast emitter that remembers its last value (a "behaviour subject").
///
/// Listeners registered with [`listen`](Self::listen) receive every value passed to
/// [`next`](Self::next) or emitted by [`update`](Self::update), by reference, in one total
/// order; [`last`](Self::last) reads the last value; [`stream`](Self::stream) follows the latest
/// value asynchronously. The [crate documentation](crate) states the guarantees.
///
/// Cloning is cheap: clones share one subject. When the last clone is dropped the subject closes:
/// its listeners are dropped and its streams end after yielding the value they have not seen.
/// A listener that owns a clone of its own subject keeps it open.
///
/// `Subject<T>` is `Send` and `Sync` when `T` is. Its values are shared with listeners on
/// other threads, so they must be `Send + Sync`; this will **not** work:
///
/// ```compile_fail
/// let subject = keyrunner_subject::Subject::new();
/// subject.next(std::rc::Rc::new(1));
/// ```
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use keyrunner_subject::Subject;
///
/// let subject = Subject::with_value(1);
/// let seen = Arc::new(Mutex::new(Vec::new()));
///
/// let sink = Arc::clone(&seen);
/// let subscription = subject.listen(move |value: &i32| sink.lock().unwrap().push(*value), true);
/// subject.next(2);
/// subscription.unsubscribe();
/// subject.next(3);
///
/// assert_eq!(*seen.lock().unwrap(), [1, 2]);
/// assert_eq!(subject.last().as_deref(), Some(&3));
/// ```
pub struct Subject<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Send + Sync + 'static> Subject<T> {
    /// Creates a subject with no last value.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::<u32>::new();
    /// assert!(subject.last().is_none());
    /// ```
    pub fn new() -> Self {
        Self::from_value(RawSubject::new())
    }

    /// Creates a subject whose last value is `value`.
    ///
    /// This is not an emission: no listener exists yet to receive it, but `immediate` listeners
    /// and new streams start from it.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::with_value("ready");
    /// assert_eq!(subject.last().as_deref(), Some(&"ready"));
    /// ```
    pub fn with_value(value: T) -> Self {
        Self::from_value(RawSubject::with_value(value))
    }

    /// Creates a subject whose last value is `value`, an `Arc` that may be shared: with
    /// [`with_value`](Self::with_value), but without allocating, so many subjects can start from
    /// one value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keyrunner_subject::Subject;
    ///
    /// let idle = Arc::new("idle");
    /// let a = Subject::with_shared_value(Arc::clone(&idle));
    /// let b = Subject::with_shared_value(Arc::clone(&idle));
    /// assert!(Arc::ptr_eq(&a.last().unwrap(), &b.last().unwrap()));
    /// ```
    pub fn with_shared_value(value: Arc<T>) -> Self {
        Self::from_value(RawSubject::with_shared_value(value))
    }

    /// Kept so that code written for earlier versions compiles; it does nothing.
    ///
    /// Every subject now writes a new value into the allocation of the value it replaces
    /// whenever nobody else holds that one (no `last()` result, no delivery or replay under
    /// way, no stream reading it), for any `T`: a steady stream of values allocates nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::<u64>::new();
    /// subject.reuse_values(); // no effect
    /// subject.next(1);
    /// assert_eq!(subject.last().as_deref(), Some(&1));
    /// ```
    pub fn reuse_values(&self)
    where
        T: Default,
    {
    }

    fn from_value(raw: RawSubject<T>) -> Self {
        Self {
            shared: Arc::new(Shared {
                raw,
                handles: AtomicUsize::new(1),
            }),
        }
    }

    /// Registers `listener`; dropping the returned [`Subscription`] removes it.
    ///
    /// The listener receives every value whose delivery starts after this call, in order. It
    /// does not receive a value whose delivery is already under way.
    ///
    /// With `immediate`, the listener is first called with the last value whose delivery has
    /// started (or the initial value), if there is one, and then with every later value; it never
    /// sees a value twice or out of order:
    ///
    /// - if no emission is under way, the call happens on this thread before `listen` returns;
    /// - if `listen` is called from inside a listener of this subject, likewise;
    /// - if another thread is delivering, that thread makes the call, before the listener's next
    ///   value; it may happen after `listen` returns.
    ///
    /// # Panics
    ///
    /// When this call delivers (first case above), it resumes the first panic of a listener
    /// called meanwhile, as [`next`](Self::next) does; the subscription is then dropped during
    /// unwinding, which removes the new listener.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use keyrunner_subject::Subject;
    ///
    /// let subject = Subject::with_value(5);
    /// let total = Arc::new(AtomicU32::new(0));
    /// let sum = Arc::clone(&total);
    /// let _subscription = subject.listen(
    ///     move |value: &u32| {
    ///         sum.fetch_add(*value, Ordering::Relaxed);
    ///     },
    ///     true,
    /// );
    /// subject.next(10);
    /// assert_eq!(total.load(Ordering::Relaxed), 15);
    /// ```
    pub fn listen<F>(&self, listener: F, immediate: bool) -> Subscription
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let id = self.shared.raw.listen(listener, immediate);
        let weak: Weak<Shared<T>> = Arc::downgrade(&self.shared);
        Subscription::new(weak, id.get())
    }

    /// Records `value` as the last value and delivers it, by reference, to every listener
    /// registered when its delivery starts, in registration order.
    ///
    /// If no delivery is under way, this thread delivers the value before returning, and then
    /// every value other threads recorded meanwhile. Otherwise the value is queued and `next`
    /// returns at once: the thread already delivering (another one, or this one if `next` is
    /// called from a listener) delivers it after the values recorded before it, once the current
    /// value has reached every listener.
    ///
    /// # Panics
    ///
    /// If this call delivered and a listener panicked, the first such panic is resumed here,
    /// after every listener received its value and the delivery role was released; later panics
    /// of the same call are dropped. The subject stays fully usable.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::new();
    /// subject.next(String::from("hello"));
    /// assert_eq!(subject.last().as_deref().map(String::as_str), Some("hello"));
    /// ```
    pub fn next(&self, value: T) {
        self.shared.raw.next(value);
    }

    /// Atomically computes the next value from the last one.
    ///
    /// `f` runs under the subject's lock with the last recorded value; if it returns `Some(v)`,
    /// `v` is emitted exactly as by [`next`](Self::next) (same ordering, same delivery) and
    /// `update` returns `true`. Two racing `update`s therefore see each other's values: this is
    /// a compare-and-set.
    ///
    /// `f` must not call into this subject (that deadlocks). A panic in `f` propagates from
    /// `update` and leaves the subject unchanged.
    ///
    /// # Panics
    ///
    /// Resumes a listener's panic as [`next`](Self::next) does.
    ///
    /// # Examples
    ///
    /// ```
    /// #[derive(Debug, PartialEq)]
    /// enum Phase { Idle, Running }
    ///
    /// let subject = keyrunner_subject::Subject::with_value(Phase::Idle);
    /// let start = |last: Option<&Phase>| (last == Some(&Phase::Idle)).then_some(Phase::Running);
    /// assert!(subject.update(start));
    /// assert!(!subject.update(start));
    /// assert_eq!(subject.last().as_deref(), Some(&Phase::Running));
    /// ```
    pub fn update(&self, f: impl FnOnce(Option<&T>) -> Option<T>) -> bool {
        self.shared.raw.update(f)
    }

    /// Returns the last recorded value, if any.
    ///
    /// A value is recorded when `next` or `update` is called, before it is delivered.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::new();
    /// assert_eq!(subject.last(), None);
    /// subject.next(7);
    /// assert_eq!(subject.last().as_deref(), Some(&7));
    /// ```
    pub fn last(&self) -> Option<Arc<T>> {
        self.shared.raw.last()
    }

    /// Returns the number of registered listeners.
    ///
    /// # Examples
    ///
    /// ```
    /// let subject = keyrunner_subject::Subject::<()>::new();
    /// let subscription = subject.listen(|_| {}, false);
    /// assert_eq!(subject.listener_count(), 1);
    /// drop(subscription);
    /// assert_eq!(subject.listener_count(), 0);
    /// ```
    pub fn listener_count(&self) -> usize {
        self.shared.raw.listener_count()
    }

    /// Returns a stream of the latest value; see [`SubjectStream`].
    ///
    /// Its first item is the last value, if there is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::executor::block_on;
    /// use futures::StreamExt;
    ///
    /// let subject = keyrunner_subject::Subject::with_value(1);
    /// let mut stream = subject.stream();
    /// subject.next(2);
    /// subject.next(3);
    /// assert_eq!(block_on(stream.next()), Some(3));
    /// drop(subject);
    /// assert_eq!(block_on(stream.next()), None);
    /// ```
    pub fn stream(&self) -> SubjectStream<T>
    where
        T: Clone,
    {
        SubjectStream::new(Arc::clone(&self.shared))
    }
}

impl<T: Send + Sync + 'static> Default for Subject<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Subject<T> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Subject<T> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.raw.close();
        }
    }
}

impl<T> fmt::Debug for Subject<T> {
    /// Prints counts, or `<locked>` while another thread holds the subject's lock; never blocks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.raw.fmt_as("Subject", f)
    }
}
