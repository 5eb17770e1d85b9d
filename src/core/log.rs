//! The replicated log (Figure 2, `log[]`): entries indexed from 1, each with
//! the term in which a leader created it, after a snapshot that replaces the
//! oldest ones (§7).
//!
//! The log knows nothing of the network or the disk. It offers the operations
//! the rules need: the term at an index, the "at least as up-to-date" test of
//! §5.4.1, and appending with deletion of a conflicting suffix (Figure 2,
//! AppendEntries receiver, rules 3 and 4).

use crate::message::{Entry, EntryData, Index, Term};

/// The in-memory log of one node: a snapshot base (§7) and the entries
/// after it.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// The last index a snapshot replaced (0 if none). Entries up to here
    /// are committed and applied, and no longer held.
    snapshot_index: Index,
    /// The term of the entry at `snapshot_index`, kept for the consistency
    /// check of the entry after it.
    snapshot_term: Term,
    /// `entries[i]` has index `snapshot_index + 1 + i`.
    entries: Vec<Entry>,
}

impl Log {
    /// Builds a log from recovered entries, contiguous from 1.
    pub fn from_entries(entries: Vec<Entry>) -> Log {
        Log::after_snapshot(0, 0, entries)
    }

    /// Builds a log whose first `snapshot_index` entries a snapshot replaced;
    /// `entries` follow it.
    pub fn after_snapshot(snapshot_index: Index, snapshot_term: Term, entries: Vec<Entry>) -> Log {
        debug_assert!(entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == snapshot_index + 1 + i as Index));
        Log {
            snapshot_index,
            snapshot_term,
            entries,
        }
    }

    /// The last index replaced by a snapshot (0 if none).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The first index the log still holds an entry for (if it holds any).
    pub fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    /// Index of the last entry, or of the snapshot if no entry follows it.
    pub fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as Index
    }

    /// Term of the last entry (or of the snapshot, or 0).
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`: 0 for index 0, the snapshot's term
    /// at its index, `None` past the end or inside the snapshot.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, if the log holds it.
    pub fn get(&self, index: Index) -> Option<&Entry> {
        let position = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(position).ok()?)
    }

    /// Entries from `from` (inclusive) to the end, at most `max` of them.
    pub fn entries_from(&self, from: Index, max: usize) -> &[Entry] {
        self.batch_from(from, max, usize::MAX)
    }

    /// Entries from `from` (inclusive) to the end, at most `max` of them and
    /// about `max_bytes` of them (but always at least one): what one
    /// AppendEntries carries.
    pub fn batch_from(&self, from: Index, max: usize, max_bytes: usize) -> &[Entry] {
        let start = self.position(from.max(self.first_index()));
        if start >= self.entries.len() {
            return &[];
        }
        let mut end = self.entries.len().min(start.saturating_add(max));
        let mut bytes = 0;
        for (position, entry) in self.entries[start..end].iter().enumerate() {
            bytes += entry_size(entry);
            if bytes > max_bytes && position > 0 {
                end = start + position;
                break;
            }
        }
        &self.entries[start..end]
    }

    /// Entries in `from..=to`, clamped to what the log holds.
    pub fn slice(&self, from: Index, to: Index) -> &[Entry] {
        let from = from.max(self.first_index());
        let to = to.min(self.last_index());
        if from > to {
            return &[];
        }
        &self.entries[self.position(from)..=self.position(to)]
    }

    /// Where the entry with `index` (at least `first_index`) sits in
    /// `entries`.
    fn position(&self, index: Index) -> usize {
        debug_assert!(index >= self.first_index());
        (index - self.first_index()) as usize
    }

    /// §5.4.1: a candidate's log is "at least as up-to-date" as ours if its
    /// last term is higher, or the terms are equal and its log is at least as
    /// long. This is what keeps a server that lacks committed entries from
    /// becoming leader (Election Restriction).
    pub fn is_up_to_date(&self, last_log_index: Index, last_log_term: Term) -> bool {
        last_log_term > self.last_term()
            || (last_log_term == self.last_term() && last_log_index >= self.last_index())
    }

    /// The first index that holds `term`, searching back from `index` (not
    /// past the snapshot). Used for the conflict hint: a follower tells the
    /// leader where the conflicting term starts so the leader can skip it in
    /// one round trip.
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > self.first_index() && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index that holds `term`, if any. Used by the leader to act on
    /// a conflict hint.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries
            .iter()
            .rev()
            .skip_while(|e| e.term > term)
            .take_while(|e| e.term >= term)
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    /// The leader appends a new entry in its current term (Figure 2, Rules
    /// for Servers, Leaders: "append entry to local log").
    pub fn append_new(&mut self, term: Term, data: EntryData) -> Index {
        let index = self.last_index() + 1;
        self.entries.push(Entry { term, index, data });
        index
    }

    /// Drops every entry with index `>= index`. Never cuts into the snapshot:
    /// what it covers is committed.
    pub fn truncate_from(&mut self, index: Index) {
        debug_assert!(index > self.snapshot_index, "truncating into the snapshot");
        let keep = index.saturating_sub(self.first_index());
        self.entries.truncate(keep as usize);
    }

    /// Overwrites one entry in place and keeps what follows it. Only the
    /// `keep_conflicting_suffix` bug switch uses this: it is exactly the
    /// mistake Figure 2's receiver rule 3 exists to prevent.
    pub(crate) fn replace_one(&mut self, entry: Entry) {
        if entry.index < self.first_index() {
            return;
        }
        let position = self.position(entry.index);
        if let Some(slot) = self.entries.get_mut(position) {
            *slot = entry;
        }
    }

    /// Appends entries that follow directly after the last one.
    pub fn extend(&mut self, entries: &[Entry]) {
        debug_assert!(entries
            .first()
            .is_none_or(|e| e.index == self.last_index() + 1));
        self.entries.extend_from_slice(entries);
    }

    /// §7: a snapshot now covers everything up to `index`, whose term is
    /// `term`. If the log holds that very entry, the entries after it are
    /// kept (InstallSnapshot receiver, rule 6); otherwise the whole log is
    /// discarded (rule 7).
    pub fn compact(&mut self, index: Index, term: Term) {
        if index <= self.snapshot_index {
            return;
        }
        if self.term_at(index) == Some(term) {
            let drop = self.position(index) + 1;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }
}

/// Roughly how many bytes an entry takes on the wire.
pub fn entry_size(entry: &Entry) -> usize {
    const OVERHEAD_BYTES: usize = 48;
    OVERHEAD_BYTES
        + match &entry.data {
            EntryData::Noop => 0,
            EntryData::Command(command) => command.len(),
            EntryData::Config(membership) => {
                let members = membership.voters.iter().chain(membership.learners.iter());
                members
                    .map(|(id, address)| id.as_str().len() + address.len() + 8)
                    .sum()
            }
        }
}

impl Log {
    /// Like `compact`, but keeps the entries after `index` even if the log's
    /// entry at `index` has another term. Only the
    /// `keep_log_conflicting_with_snapshot` bug switch uses this: it is the
    /// mistake InstallSnapshot's rule 7 prevents (hashicorp/raft issue 697).
    pub(crate) fn compact_keeping_suffix(&mut self, index: Index, term: Term) {
        if index <= self.snapshot_index {
            return;
        }
        let drop = (index.min(self.last_index()) - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of_terms(terms: &[Term]) -> Log {
        let mut log = Log::default();
        for &term in terms {
            log.append_new(term, EntryData::Noop);
        }
        log
    }

    #[test]
    fn term_at_zero_is_zero_and_past_the_end_is_none() {
        let log = log_of_terms(&[1, 1, 2]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(4), None);
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_of_terms(&[1, 2, 2]);
        assert!(
            log.is_up_to_date(1, 3),
            "higher last term wins even if shorter"
        );
        assert!(log.is_up_to_date(3, 2), "same term, same length");
        assert!(!log.is_up_to_date(2, 2), "same term, shorter");
        assert!(
            !log.is_up_to_date(9, 1),
            "lower last term loses even if longer"
        );
    }

    #[test]
    fn term_boundaries_for_conflict_hints() {
        let log = log_of_terms(&[1, 1, 3, 3, 3, 5]);
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.first_index_of_term_at(2), 1);
        assert_eq!(log.last_index_of_term(3), Some(5));
        assert_eq!(log.last_index_of_term(2), None);
        assert_eq!(log.last_index_of_term(5), Some(6));
    }

    #[test]
    fn compaction_keeps_what_follows_a_matching_entry_and_drops_a_conflicting_log() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        log.compact(2, 1);
        assert_eq!((log.first_index(), log.last_index()), (3, 4));
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(1), None, "compacted away");
        assert_eq!(log.slice(1, 9).len(), 2);
        log.compact(5, 3);
        assert_eq!((log.snapshot_index(), log.last_index()), (5, 5));
        assert_eq!(log.last_term(), 3);
        assert_eq!(log.append_new(3, EntryData::Noop), 6);
        assert_eq!(log.get(6).map(|e| e.index), Some(6));
    }

    #[test]
    fn slices_clamp_to_the_log() {
        let log = log_of_terms(&[1, 1, 2]);
        assert_eq!(log.entries_from(2, 10).len(), 2);
        assert_eq!(log.entries_from(2, 1).len(), 1);
        assert_eq!(log.entries_from(4, 10).len(), 0);
        assert_eq!(log.batch_from(1, 10, 1).len(), 1, "always at least one");
        assert_eq!(log.batch_from(1, 10, 100).len(), 2, "48 bytes each");
        assert_eq!(log.slice(2, 9).len(), 2);
        assert_eq!(log.slice(3, 2).len(), 0);
    }
}
