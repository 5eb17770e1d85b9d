//! The replicated log (Figure 2, `log[]`): entries indexed from 1, each with
//! the term in which a leader created it.
//!
//! The log knows nothing of the network or the disk. It offers the operations
//! the rules need: the term at an index, the "at least as up-to-date" test of
//! §5.4.1, and appending with deletion of a conflicting suffix (Figure 2,
//! AppendEntries receiver, rules 3 and 4).

use crate::message::{Entry, EntryData, Index, Term};

/// The in-memory log of one node.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// `entries[i]` has index `i + 1`.
    entries: Vec<Entry>,
}

impl Log {
    /// Builds a log from recovered entries, which must be contiguous from 1.
    pub fn from_entries(entries: Vec<Entry>) -> Log {
        debug_assert!(entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == i as Index + 1));
        Log { entries }
    }

    /// Index of the last entry, or 0 if the log is empty.
    pub fn last_index(&self) -> Index {
        self.entries.len() as Index
    }

    /// Term of the last entry, or 0 if the log is empty.
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |e| e.term)
    }

    /// The term of the entry at `index`: 0 for index 0, `None` past the end.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.get(index).map(|e| e.term)
    }

    /// The entry at `index`, if the log holds it.
    pub fn get(&self, index: Index) -> Option<&Entry> {
        let position = index.checked_sub(1)?;
        self.entries.get(usize::try_from(position).ok()?)
    }

    /// Entries from `from` (inclusive) to the end, at most `max` of them.
    pub fn entries_from(&self, from: Index, max: usize) -> &[Entry] {
        let start = (from.max(1) - 1) as usize;
        if start >= self.entries.len() {
            return &[];
        }
        let end = self.entries.len().min(start.saturating_add(max));
        &self.entries[start..end]
    }

    /// Entries in `from..=to`, clamped to the log.
    pub fn slice(&self, from: Index, to: Index) -> &[Entry] {
        let to = to.min(self.last_index());
        if from > to {
            return &[];
        }
        &self.entries[(from.max(1) - 1) as usize..to as usize]
    }

    /// §5.4.1: a candidate's log is "at least as up-to-date" as ours if its
    /// last term is higher, or the terms are equal and its log is at least as
    /// long. This is what keeps a server that lacks committed entries from
    /// becoming leader (Election Restriction).
    pub fn is_up_to_date(&self, last_log_index: Index, last_log_term: Term) -> bool {
        last_log_term > self.last_term()
            || (last_log_term == self.last_term() && last_log_index >= self.last_index())
    }

    /// The first index that holds `term`, searching back from `index`. Used
    /// for the conflict hint: a follower tells the leader where the
    /// conflicting term starts so the leader can skip it in one round trip.
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > 1 && self.term_at(first - 1) == Some(term) {
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

    /// Drops every entry with index `>= index`.
    pub fn truncate_from(&mut self, index: Index) {
        self.entries.truncate((index.max(1) - 1) as usize);
    }

    /// Overwrites one entry in place and keeps what follows it. Only the
    /// `keep_conflicting_suffix` bug switch uses this: it is exactly the
    /// mistake Figure 2's receiver rule 3 exists to prevent.
    pub(crate) fn replace_one(&mut self, entry: Entry) {
        if let Some(slot) = (entry.index as usize)
            .checked_sub(1)
            .and_then(|i| self.entries.get_mut(i))
        {
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
    fn slices_clamp_to_the_log() {
        let log = log_of_terms(&[1, 1, 2]);
        assert_eq!(log.entries_from(2, 10).len(), 2);
        assert_eq!(log.entries_from(2, 1).len(), 1);
        assert_eq!(log.entries_from(4, 10).len(), 0);
        assert_eq!(log.slice(2, 9).len(), 2);
        assert_eq!(log.slice(3, 2).len(), 0);
    }
}
