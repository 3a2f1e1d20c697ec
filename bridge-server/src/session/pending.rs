//! The client's calls in flight: one entry per request the tool has and has not answered, so
//! that every request gets exactly one answer. Bounded in entries and in the bytes it keeps
//! (ids, method and tool names); what the answers say and who sends them is the core's
//! business.

use std::collections::HashMap;

use shared::jsonrpc::Id;

use super::event::Call;

/// Calls in flight at most; a request past it is answered at once with an error.
pub(crate) const MAX_PENDING: usize = 4096;

/// Bytes of ids and names the table keeps at most: room for [`MAX_PENDING`] calls with ids of
/// a few hundred bytes. A request whose id would pass it is answered at once with an error.
pub(crate) const MAX_PENDING_BYTES: usize = 2 * 1024 * 1024;

/// What an entry costs besides its strings (the table's own slot, roughly).
const ENTRY_OVERHEAD: usize = 64;

/// The table of calls in flight.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    calls: HashMap<Id, Call>,
    /// What the entries keep, by [`cost`].
    bytes: usize,
}

/// Why a call cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

fn id_len(id: &Id) -> usize {
    match id {
        Id::Num(s) | Id::Str(s) => s.len(),
    }
}

/// The bytes an entry keeps.
fn cost(id: &Id, call: &Call) -> usize {
    ENTRY_OVERHEAD + id_len(id) + call.method.len() + call.tool_name.as_deref().map_or(0, str::len)
}

impl Pending {
    /// Whether [`Self::insert`] would take this call.
    pub(crate) fn fits(&self, id: &Id, call: &Call) -> bool {
        let old = self.calls.get(id).map_or(0, |c| cost(id, c));
        (old > 0 || self.calls.len() < MAX_PENDING)
            && self.bytes - old + cost(id, call) <= MAX_PENDING_BYTES
    }

    /// Adds a call, unless that would pass a bound. A call with an id already in flight
    /// replaces the earlier one (the tool's answer will name that id once).
    pub(crate) fn insert(&mut self, id: Id, call: Call) -> Result<(), Full> {
        if !self.fits(&id, &call) {
            return Err(Full);
        }
        let old = self.calls.get(&id).map_or(0, |c| cost(&id, c));
        self.bytes = self.bytes - old + cost(&id, &call);
        self.calls.insert(id, call);
        Ok(())
    }

    /// Takes the call answered by a response with this id.
    pub(crate) fn remove(&mut self, id: &Id) -> Option<Call> {
        let call = self.calls.remove(id)?;
        self.bytes -= cost(id, &call);
        Some(call)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(crate) fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// Empties the table, in a stable order (by id), to answer every call.
    pub(crate) fn drain_sorted(&mut self) -> Vec<(Id, Call)> {
        let mut calls: Vec<(Id, Call)> = self.calls.drain().collect();
        self.bytes = 0;
        calls.sort_by_key(|(id, _)| id.to_string());
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn call(method: &str) -> Call {
        Call {
            method: method.into(),
            tool_name: None,
            started: Instant::now(),
        }
    }

    #[test]
    fn bounded_in_entries_and_bytes() {
        let mut p = Pending::default();
        for i in 0..MAX_PENDING {
            p.insert(Id::Num(i.to_string().into()), call("m"))
                .expect("room");
        }
        assert_eq!(p.insert(Id::Num("x".into()), call("m")), Err(Full));
        // The same id again replaces its entry.
        assert_eq!(p.insert(Id::Num("7".into()), call("n")), Ok(()));
        assert_eq!(p.len(), MAX_PENDING);
        let mut p = Pending::default();
        let big = Id::Str("i".repeat(MAX_PENDING_BYTES).into());
        assert_eq!(p.insert(big, call("m")), Err(Full), "one id past the bound");
        let half = Id::Str("i".repeat(MAX_PENDING_BYTES / 2).into());
        p.insert(half.clone(), call("m")).expect("room");
        assert!(p
            .insert(Id::Str("j".repeat(MAX_PENDING_BYTES / 2).into()), call("m"))
            .is_err());
        assert!(p.remove(&half).is_some());
        assert_eq!(p.bytes(), 0);
    }
}
