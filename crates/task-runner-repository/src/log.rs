//! [`Log`]: one run's progress, as a base value plus the deltas since, read with cursors.
//!
//! The log lives under its run's lock, and every method here runs under that lock, so none of
//! them runs user code: values are moved and their `Arc`s cloned, never cloned themselves, and
//! whatever a method removes is handed back to be dropped by the caller once the lock is
//! released. Folding (user code: `Clone` and [`Accumulate`](crate::Accumulate)) happens on a
//! [`Folding`], outside the lock.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::item::Fold;

/// One run's progress: `base` (a snapshot, or a fold of earlier deltas) at `base_seq`, and the
/// deltas that followed it.
///
/// Invariants: `deltas` holds the items `lo ..= seq` (`lo = seq + 1 - deltas.len()`), all
/// deltas, none before the last snapshot; `lo - 1 <= base_seq <= seq`. The progress is `base`
/// with the deltas after `base_seq` folded in.
pub(crate) struct Log<P> {
    /// The last item's sequence number (0: no item yet).
    seq: u64,
    base: Option<Arc<P>>,
    base_seq: u64,
    /// Boxed on the first delta: a run of snapshots (or of nothing) keeps none.
    deltas: Deltas<P>,
    /// Set by the first delta: how deltas fold.
    fold: Option<Fold<P>>,
    /// A replaced snapshot, kept so that its allocation can hold a later snapshot once nobody
    /// else holds it (the key's subject lets go of it one item later).
    spare: Option<Arc<P>>,
}

/// A log's deltas: a boxed deque, made on the first delta.
#[derive(Default)]
#[expect(
    clippy::box_collection,
    reason = "one word instead of four in every run; the box is made on a run's first delta"
)]
struct Deltas<P>(Option<Box<VecDeque<Arc<P>>>>);

impl<P> Deltas<P> {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |deltas| deltas.len())
    }

    fn get(&self, index: usize) -> Option<&Arc<P>> {
        self.0.as_ref()?.get(index)
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<P>> {
        self.0.iter().flat_map(|deltas| deltas.iter())
    }

    fn push_back(&mut self, delta: Arc<P>) {
        self.0.get_or_insert_default().push_back(delta);
    }

    fn pop_front(&mut self) -> Option<Arc<P>> {
        self.0.as_mut()?.pop_front()
    }

    /// Every delta, in order, leaving none.
    fn take_all(&mut self) -> Vec<Arc<P>> {
        match self.0.as_mut() {
            Some(deltas) if !deltas.is_empty() => deltas.drain(..).collect(),
            _ => Vec::new(),
        }
    }
}

/// Values a log let go of, to be dropped outside the lock.
pub(crate) type Evicted<P> = (Option<Arc<P>>, Vec<Arc<P>>);

/// What a cursor finds after its position.
pub(crate) enum Next<P> {
    /// The cursor has seen every item.
    UpToDate,
    /// The next delta, at this sequence number.
    Delta(u64, Arc<P>),
    /// The items after the cursor are gone (a snapshot replaced them, or more than the bound of
    /// deltas came since): the cursor must take the whole progress.
    Resync,
}

impl<P> Default for Log<P> {
    fn default() -> Self {
        Self {
            seq: 0,
            base: None,
            base_seq: 0,
            deltas: Deltas(None),
            fold: None,
            spare: None,
        }
    }
}

impl<P> Log<P> {
    /// The last item's sequence number (0: none yet).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The first sequence number still held as a delta.
    fn lo(&self) -> u64 {
        self.seq + 1 - self.deltas.len() as u64
    }

    /// Records a snapshot: it replaces the base and every delta. The base it replaces becomes
    /// the spare (see [`take_spare`](Self::take_spare)).
    pub(crate) fn snapshot(&mut self, value: Arc<P>) -> (u64, Evicted<P>) {
        self.seq += 1;
        self.base_seq = self.seq;
        let base = self.base.replace(value);
        let older = std::mem::replace(&mut self.spare, base);
        let deltas = self.deltas.take_all();
        (self.seq, (older, deltas))
    }

    /// An earlier snapshot's allocation, if one is kept; it may still be shared.
    pub(crate) fn take_spare(&mut self) -> Option<Arc<P>> {
        self.spare.take()
    }

    /// Records a delta.
    pub(crate) fn delta(&mut self, value: Arc<P>, fold: Fold<P>) -> u64 {
        self.seq += 1;
        self.fold = Some(fold);
        self.deltas.push_back(value);
        self.seq
    }

    /// Whether more than `max` deltas are held.
    pub(crate) fn over(&self, max: usize) -> bool {
        self.deltas.len() > max
    }

    /// The progress, if no delta follows the base (so nothing needs folding).
    pub(crate) fn current(&self) -> Option<Option<Arc<P>>> {
        (self.base_seq == self.seq).then(|| self.base.clone())
    }

    /// What a cursor that has seen everything up to `seen` reads next.
    pub(crate) fn next_after(&self, seen: u64) -> Next<P> {
        if seen >= self.seq {
            return Next::UpToDate;
        }
        let lo = self.lo();
        if seen + 1 < lo {
            return Next::Resync;
        }
        let index = usize::try_from(seen + 1 - lo).unwrap_or(usize::MAX);
        match self.deltas.get(index) {
            Some(delta) => Next::Delta(seen + 1, Arc::clone(delta)),
            None => Next::Resync,
        }
    }

    /// What it takes to compute the progress now, outside the lock.
    pub(crate) fn folding(&self) -> Folding<P> {
        let after_base = usize::try_from(self.base_seq + 1 - self.lo()).unwrap_or(usize::MAX);
        Folding {
            seq: self.seq,
            base: self.base.clone(),
            deltas: if self.base_seq == self.seq {
                Vec::new()
            } else {
                self.deltas.iter().skip(after_base).cloned().collect()
            },
            fold: self.fold,
        }
    }

    /// Makes `value`, the progress at `seq`, the base — unless a snapshot came since, which
    /// replaced it. Returns the old base. Deltas are kept for cursors still reading them.
    pub(crate) fn install(&mut self, seq: u64, value: Arc<P>) -> Option<Arc<P>> {
        if seq < self.base_seq || seq > self.seq {
            return Some(value);
        }
        self.base_seq = seq;
        self.base.replace(value)
    }

    /// Makes `value`, the final progress at `seq` (the last item), the base, at the run's end:
    /// from then on the progress never needs folding. Returns the old base. Deltas are kept for
    /// cursors still reading them.
    pub(crate) fn settle(&mut self, seq: u64, value: Option<Arc<P>>) -> Option<Arc<P>> {
        debug_assert_eq!(seq, self.seq, "a run's end comes after its last item");
        self.base_seq = seq;
        std::mem::replace(&mut self.base, value)
    }

    /// Drops the oldest deltas already folded into the base, down to `keep`.
    pub(crate) fn trim(&mut self, keep: usize) -> Vec<Arc<P>> {
        let mut evicted = Vec::new();
        while self.deltas.len() > keep && self.lo() <= self.base_seq {
            evicted.extend(self.deltas.pop_front());
        }
        evicted
    }
}

/// A log's progress at one sequence number, ready to be folded outside the lock.
pub(crate) struct Folding<P> {
    pub(crate) seq: u64,
    base: Option<Arc<P>>,
    deltas: Vec<Arc<P>>,
    fold: Option<Fold<P>>,
}

impl<P> Folding<P> {
    /// Whether [`fold`](Self::fold) has user code to run (false: it only hands back the base).
    pub(crate) fn is_trivial(&self) -> bool {
        self.deltas.is_empty()
    }

    /// The progress at `seq`. Runs user code (`Clone`, `Accumulate`) when there are deltas.
    pub(crate) fn fold(self) -> Option<Arc<P>> {
        match (self.deltas.split_first(), self.fold) {
            (Some((first, rest)), Some(fold)) => {
                Some(Arc::new(fold(self.base.as_deref(), first, rest)))
            }
            // Deltas are recorded with their fold, so there is none only without deltas.
            _ => self.base,
        }
    }
}
