//! The streaming side: [`Redactor`] and the engine behind [`redact_all`].
//!
//! # What gets replaced
//!
//! Every occurrence of every pattern is found, overlapping ones included.
//! Occurrences that overlap are merged into one *region*; each region
//! becomes a single label, the label of its leftmost occurrence (the longest
//! one if several start there). Adjacent but non-overlapping occurrences stay
//! separate regions.
//!
//! # Holdback
//!
//! After each write the engine finds the longest suffix of the unreleased
//! bytes that is a proper prefix of some pattern (see
//! `Patterns::holdback`). Everything before it is final and is
//! written out; the suffix is held. An occurrence is processed in the first
//! write where its start lies before the held suffix; by then all
//! occurrences starting at the same position are known, so the label is
//! final, and because occurrences are processed in order of their start the
//! result does not depend on how the input was split.
//!
//! When a region reaches into the held suffix, its label has already been
//! written; the covered held bytes are remembered as *handled* so they are
//! never written, and later occurrences that overlap the region extend it
//! silently.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::search::Scratch;
use crate::wrapped::LineState;
use crate::Patterns;

/// Largest held partial match that [`Redactor::flush_idle`] releases.
pub const IDLE_FLUSH_MAX: usize = 3;

/// A merged run of overlapping occurrences.
#[derive(Debug)]
struct Region {
    start: usize,
    end: usize,
    /// Pattern whose label names the region.
    pattern: u32,
    /// Secrets with an occurrence in the region (first one inline).
    secret: u32,
    more: Vec<u32>,
}

impl Region {
    fn absorb(&mut self, other: Region) {
        if other.start < self.start {
            self.start = other.start;
            self.pattern = other.pattern;
        }
        self.end = self.end.max(other.end);
        for s in std::iter::once(other.secret).chain(other.more) {
            if s != self.secret && !self.more.contains(&s) {
                self.more.push(s);
            }
        }
    }

    fn secrets(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.secret).chain(self.more.iter().copied())
    }
}

/// Stream state, independent of how the patterns are owned.
#[derive(Default)]
pub(crate) struct Engine {
    /// Bytes not yet final.
    pending: Zeroizing<Vec<u8>>,
    /// Leading bytes of `pending` already accounted for in the output:
    /// covered by an emitted label or released by an idle flush.
    handled: usize,
    /// Leading bytes of `pending` whose occurrences were all processed (by
    /// an idle flush); occurrences ending there are skipped.
    done: usize,
    /// The last emitted region, while it reaches into `pending`.
    open: Option<Region>,
    /// The line `pending` starts in (for line-wrapped base64).
    line: LineState,
    regions: Vec<Region>,
    /// Occurrences of one step: `(start, end, pattern)`.
    matches: Vec<(usize, usize, usize)>,
    search: Scratch,
    scratch: Zeroizing<Vec<u8>>,
    counts: BTreeMap<String, u64>,
}

/// How far a processing step may go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Hold back a possible partial match.
    Write,
    /// Release everything, keep the bytes as context for later matches.
    Idle,
    /// Release everything, forget the context.
    Finish,
}

impl Engine {
    pub(crate) fn write(&mut self, patterns: &Patterns, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.process(patterns, input, Step::Write, out);
        } else {
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            extend_wiping(&mut buf, &self.pending);
            extend_wiping(&mut buf, input);
            self.process(patterns, &buf, Step::Write, out);
            buf.clear();
            self.scratch = buf;
        }
    }

    pub(crate) fn flush_idle(&mut self, patterns: &Patterns, out: &mut Vec<u8>) {
        if self.held() == 0 || self.pending.len() > IDLE_FLUSH_MAX {
            return;
        }
        let buf = std::mem::take(&mut self.pending);
        self.process(patterns, &buf, Step::Idle, out);
        self.pending = buf;
    }

    pub(crate) fn finish(&mut self, patterns: &Patterns, out: &mut Vec<u8>) {
        let buf = std::mem::take(&mut self.pending);
        self.process(patterns, &buf, Step::Finish, out);
        self.pending = buf;
        self.pending.clear();
        self.handled = 0;
        self.done = 0;
        self.open = None;
    }

    pub(crate) fn held(&self) -> usize {
        self.pending.len() - self.handled
    }

    pub(crate) fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// `buf` is `pending` followed by new input.
    fn process(&mut self, patterns: &Patterns, buf: &[u8], step: Step, out: &mut Vec<u8>) {
        let hold = match step {
            Step::Write => patterns.holdback(buf, self.line, &mut self.search),
            Step::Idle | Step::Finish => buf.len(),
        };
        self.collect_regions(patterns, buf, hold);
        let mut handled = self.handled;
        for region in std::mem::take(&mut self.regions) {
            match &mut self.open {
                Some(open) if region.start < open.end => {
                    let before: Vec<u32> = open.secrets().collect();
                    open.absorb(region);
                    let new: Vec<u32> = open.secrets().filter(|s| !before.contains(s)).collect();
                    self.count(patterns, new.into_iter());
                    handled = handled.max(self.open.as_ref().map_or(0, |o| o.end));
                }
                _ => {
                    if region.start > handled {
                        out.extend_from_slice(&buf[handled..region.start]);
                    }
                    out.extend_from_slice(
                        &patterns.labels[patterns.info[region.pattern as usize].label as usize],
                    );
                    self.count(patterns, region.secrets());
                    handled = handled.max(region.end);
                    self.open = Some(region);
                }
            }
        }
        if hold > handled {
            out.extend_from_slice(&buf[handled..hold]);
            handled = hold;
        }
        match step {
            Step::Idle => {
                self.handled = handled;
                self.done = buf.len();
            }
            Step::Write | Step::Finish => {
                self.handled = handled - hold;
                self.done = self.done.saturating_sub(hold);
                self.open = self.open.take().filter(|o| o.end > hold).map(|mut o| {
                    o.start = o.start.saturating_sub(hold);
                    o.end -= hold;
                    o
                });
                if step == Step::Write {
                    // `buf` is the input or the scratch buffer, never `pending`.
                    self.line = self.line.after(&buf[..hold]);
                    self.pending.clear();
                    extend_wiping(&mut self.pending, &buf[hold..]);
                } else {
                    self.line = LineState::default();
                }
            }
        }
    }

    /// Merges the occurrences that start before `hold` into sorted,
    /// disjoint regions in `self.regions`.
    fn collect_regions(&mut self, patterns: &Patterns, buf: &[u8], hold: usize) {
        self.regions.clear();
        if patterns.is_empty() || hold == 0 {
            return;
        }
        let (done, matches) = (self.done, &mut self.matches);
        matches.clear();
        patterns.for_each_match(buf, self.line, &mut self.search, |start, end, id| {
            if start < hold && end > done {
                matches.push((start, end, id));
            }
        });
        matches.sort_by_key(|&(_, end, _)| end);
        // Ordered by end, a new occurrence can only overlap the regions at
        // the top of the stack.
        for &(start, end, id) in matches.iter() {
            let mut region = Region {
                start,
                end,
                pattern: id as u32,
                secret: patterns.info[id].secret,
                more: Vec::new(),
            };
            while let Some(top) = self.regions.last() {
                if top.end <= region.start {
                    break;
                }
                let Some(top) = self.regions.pop() else { break };
                // `region` ends last; keep it as the survivor so a tie on
                // the start keeps the longer occurrence's label.
                region.absorb(top);
            }
            self.regions.push(region);
        }
    }

    fn count(&mut self, patterns: &Patterns, secrets: impl Iterator<Item = u32>) {
        for s in secrets {
            let name = &patterns.names[s as usize];
            match self.counts.get_mut(name) {
                Some(n) => *n += 1,
                None => {
                    self.counts.insert(name.clone(), 1);
                }
            }
        }
    }
}

/// Appends `bytes`, moving to a larger buffer by hand so that the old
/// allocation is wiped instead of being freed with secret bytes in it.
fn extend_wiping(buf: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(2 * buf.capacity())));
        bigger.extend_from_slice(buf);
        *buf = bigger; // the old buffer is zeroized as it drops
    }
    buf.extend_from_slice(bytes);
}

/// One streaming redactor: use one per output stream (stdout, stderr).
///
/// Feed it with [`write`](Redactor::write); it appends to `out` every byte
/// that can no longer become part of a match, labels in place of matches,
/// and holds the rest (at most [`Patterns::max_held`] bytes). Call
/// [`flush_idle`](Redactor::flush_idle) when the stream has been quiet for a
/// while and [`finish`](Redactor::finish) at end of stream.
pub struct Redactor {
    patterns: Arc<Patterns>,
    engine: Engine,
}

impl Redactor {
    /// A redactor with nothing held and no counts.
    pub fn new(patterns: Arc<Patterns>) -> Redactor {
        Redactor {
            patterns,
            engine: Engine::default(),
        }
    }

    /// Consumes `input`, appending everything releasable to `out`.
    ///
    /// The concatenated output of any sequence of writes followed by
    /// [`finish`](Redactor::finish) is the same however the input is split.
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.engine.write(&self.patterns, input, out);
    }

    /// Idle policy: releases the held bytes only when they are at most
    /// [`IDLE_FLUSH_MAX`] bytes long, so at most that many bytes of any one
    /// secret form can ever appear before the rest of it is redacted; longer
    /// partial matches stay held until more input or [`finish`](Redactor::finish).
    ///
    /// Released bytes stay in the search's context: if the secret is
    /// completed later, its remaining bytes are replaced by a label. Complete
    /// occurrences among the held bytes are replaced as usual.
    pub fn flush_idle(&mut self, out: &mut Vec<u8>) {
        self.engine.flush_idle(&self.patterns, out);
    }

    /// End of stream: releases everything still held (redacted as needed).
    /// The redactor can be reused for a new stream; counts are kept.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.engine.finish(&self.patterns, out);
    }

    /// Bytes currently held back (not yet in any output).
    pub fn held(&self) -> usize {
        self.engine.held()
    }

    /// Regions redacted so far, per secret name. A region counts once for
    /// each secret with an occurrence in it.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        self.engine.counts()
    }

    /// The shared pattern set.
    pub fn patterns(&self) -> &Arc<Patterns> {
        &self.patterns
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns)
            .field("held", &self.held())
            .field("counts", self.counts())
            .finish()
    }
}

/// Redacts a whole buffer at once (error texts, audit strings).
pub fn redact_all(patterns: &Patterns, input: &[u8]) -> Vec<u8> {
    let mut engine = Engine::default();
    let mut out = Vec::with_capacity(input.len());
    engine.write(patterns, input, &mut out);
    engine.finish(patterns, &mut out);
    out
}
