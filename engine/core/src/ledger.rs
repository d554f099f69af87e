//! Ledgers: balances moved only by movements, with the non-negative invariant.
//! Pure arithmetic; the store applies it inside its transaction.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Stock comes in: on hand + q.
    Receive,
    /// Stock goes out: on hand − q (available must stay ≥ 0).
    Issue,
    /// Stock an instance took out comes back: on hand + q, never more than
    /// that instance issued (less what it returned), per ledger and dimensions.
    Return,
    /// Set aside for someone: reserved + q (available must stay ≥ 0).
    Reserve,
    /// A reservation is given up: reserved − q.
    Release,
    /// Reserved stock goes out: reserved − q and on hand − q.
    IssueReserved,
    /// A correction after counting: on hand + q (q may be negative).
    Adjust,
    /// Moved to other dimensions (e.g. another warehouse): on hand − q here, + q there.
    Transfer,
}

impl MovementKind {
    pub const ALL: &[(&str, MovementKind)] = &[
        ("receive", MovementKind::Receive),
        ("issue", MovementKind::Issue),
        ("return", MovementKind::Return),
        ("reserve", MovementKind::Reserve),
        ("release", MovementKind::Release),
        ("issue_reserved", MovementKind::IssueReserved),
        ("adjust", MovementKind::Adjust),
        ("transfer", MovementKind::Transfer),
    ];

    pub fn parse(s: &str) -> Option<MovementKind> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }
}

/// One requested movement, before it is applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Posting {
    pub ledger: String,
    pub kind: MovementKind,
    /// Dimension → record id, e.g. {part: P-001, warehouse: WH-ZY-1F}.
    pub dims: BTreeMap<String, String>,
    pub quantity: i64,
    /// For transfers: the dimensions it goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub reason: String,
}

/// The quantities of one combination of dimensions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Balance {
    pub fn available(&self) -> i64 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

/// What one instance has moved in one ledger for one combination of
/// dimensions: what it may still return.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub ledger: String,
    pub dims: BTreeMap<String, String>,
    /// Taken out (`issue`, `issue_reserved`).
    pub issued: i64,
    /// Brought back (`return`).
    pub returned: i64,
}

/// Why the postings of a command are refused before they reach a balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PostingRefused {
    #[error("{ledger}: {dims:?} can take back at most {returnable} (issued {issued}, returned {returned}), not {requested}")]
    ReturnExceedsIssued { ledger: String, dims: BTreeMap<String, String>, requested: i64, issued: i64, returned: i64, returnable: i64 },
    #[error("{ledger}: one movement may move at most {max}, not {requested}")]
    OverMaximum { ledger: String, requested: i64, max: i64 },
    #[error("one command may post at most {max} movements, not {count}")]
    TooManyMovements { count: usize, max: usize },
    #[error("the reason of a movement may be at most {max} characters, not {length}")]
    ReasonTooLong { length: usize, max: usize },
    #[error("a `return` brings back what a workflow instance issued: it is posted by that instance's transition, not by hand")]
    ReturnByHand,
}

/// How many movements one command or one posting by hand may make.
pub const MAX_MOVEMENTS: usize = 200;
/// How long a movement's reason may be, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Checks the bounds of a list of postings (count, reason length, each
/// quantity against its ledger's `max_quantity`, given by `max_of`).
pub fn check_bounds(postings: &[Posting], max_of: impl Fn(&str) -> i64) -> Result<(), PostingRefused> {
    if postings.len() > MAX_MOVEMENTS {
        return Err(PostingRefused::TooManyMovements { count: postings.len(), max: MAX_MOVEMENTS });
    }
    for p in postings {
        let length = p.reason.chars().count();
        if length > MAX_REASON_CHARS {
            return Err(PostingRefused::ReasonTooLong { length, max: MAX_REASON_CHARS });
        }
        let max = max_of(&p.ledger);
        if p.quantity.checked_abs().is_none_or(|q| q > max) {
            return Err(PostingRefused::OverMaximum { ledger: p.ledger.clone(), requested: p.quantity, max });
        }
    }
    Ok(())
}

/// Adds a command's postings to what its instance has moved, refusing a
/// `return` of more than the instance issued (less what it returned) for
/// those dimensions. The check is over the running totals, so repeated or
/// split lines in one command add up as they would across commands.
pub fn track(moved: &mut Vec<Moved>, postings: &[Posting]) -> Result<(), PostingRefused> {
    let before = moved.clone();
    for p in postings {
        let (issued, returned) = match p.kind {
            MovementKind::Issue | MovementKind::IssueReserved => (p.quantity, 0),
            MovementKind::Return => (0, p.quantity),
            _ => continue,
        };
        let at = match moved.iter().position(|m| m.ledger == p.ledger && m.dims == p.dims) {
            Some(at) => at,
            None => {
                moved.push(Moved { ledger: p.ledger.clone(), dims: p.dims.clone(), issued: 0, returned: 0 });
                moved.len() - 1
            }
        };
        let m = &mut moved[at];
        let new_issued = m.issued.checked_add(issued);
        let new_returned = m.returned.checked_add(returned);
        match (new_issued, new_returned) {
            (Some(i), Some(r)) if r <= i => {
                m.issued = i;
                m.returned = r;
            }
            _ => {
                // Report against the totals before this command: what it asked in all, what could go back.
                let old = before.iter().find(|o| o.ledger == p.ledger && o.dims == p.dims).cloned().unwrap_or_default();
                let requested = postings
                    .iter()
                    .filter(|q| q.kind == MovementKind::Return && q.ledger == p.ledger && q.dims == p.dims)
                    .fold(0i64, |sum, q| sum.saturating_add(q.quantity));
                return Err(PostingRefused::ReturnExceedsIssued {
                    ledger: p.ledger.clone(),
                    dims: p.dims.clone(),
                    requested,
                    issued: old.issued,
                    returned: old.returned,
                    returnable: old.issued.saturating_sub(old.returned).max(0),
                });
            }
        }
    }
    Ok(())
}

/// Why a movement is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("not enough in {ledger} for {dims:?}: {requested} requested, {available} available")]
pub struct Violation {
    pub ledger: String,
    pub dims: BTreeMap<String, String>,
    pub requested: i64,
    pub available: i64,
}

/// One side of a movement's effect: which balance, by how much.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub dims: BTreeMap<String, String>,
    pub on_hand: i64,
    pub reserved: i64,
}

/// The balance changes a posting makes (one, or two for a transfer).
pub fn deltas(p: &Posting) -> Vec<Delta> {
    let q = p.quantity;
    let d = |on_hand, reserved| Delta { dims: p.dims.clone(), on_hand, reserved };
    match p.kind {
        MovementKind::Receive | MovementKind::Return => vec![d(q, 0)],
        MovementKind::Issue => vec![d(-q, 0)],
        MovementKind::Reserve => vec![d(0, q)],
        MovementKind::Release => vec![d(0, -q)],
        MovementKind::IssueReserved => vec![d(-q, -q)],
        MovementKind::Adjust => vec![d(q, 0)],
        MovementKind::Transfer => {
            let mut out = vec![d(-q, 0)];
            if let Some(to) = &p.to {
                out.push(Delta { dims: to.clone(), on_hand: q, reserved: 0 });
            }
            out
        }
    }
}

/// Applies a delta; with `non_negative`, refuses when available or reserved would go below zero.
/// Arithmetic is checked: a balance that would leave the 64-bit range is refused, never wrapped.
pub fn apply(ledger: &str, balance: &Balance, delta: &Delta, non_negative: bool) -> Result<Balance, Violation> {
    let on_hand = balance.on_hand.checked_add(delta.on_hand);
    let reserved = balance.reserved.checked_add(delta.reserved);
    let (Some(on_hand), Some(reserved)) = (on_hand, reserved) else {
        return Err(Violation {
            ledger: ledger.to_string(),
            dims: delta.dims.clone(),
            requested: delta.on_hand.max(delta.reserved),
            available: i64::MAX.saturating_sub(balance.on_hand.max(balance.reserved)),
        });
    };
    let after = Balance { on_hand, reserved };
    if on_hand.checked_sub(reserved).is_none() {
        return Err(Violation { ledger: ledger.to_string(), dims: delta.dims.clone(), requested: delta.on_hand, available: 0 });
    }
    if non_negative && (after.available() < 0 || after.reserved < 0 || after.on_hand < 0) {
        let requested = if delta.reserved < 0 && delta.on_hand == 0 { -delta.reserved } else { (-delta.on_hand).max(delta.reserved) };
        let available = if delta.reserved < 0 && delta.on_hand == 0 {
            balance.reserved
        } else if delta.reserved < 0 {
            balance.reserved.min(balance.on_hand)
        } else {
            balance.available()
        };
        return Err(Violation { ledger: ledger.to_string(), dims: delta.dims.clone(), requested, available });
    }
    Ok(after)
}

/// The key of a balance: dimension values in the ledger's dimension order.
pub fn balance_key(dims: &BTreeMap<String, String>, order: &[String]) -> String {
    order.iter().map(|d| dims.get(d).map(String::as_str).unwrap_or("")).collect::<Vec<_>>().join("\u{1f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posting(kind: MovementKind, q: i64) -> Posting {
        Posting { ledger: "stock".into(), kind, dims: BTreeMap::from([("part".into(), "p".into())]), quantity: q, to: None, reason: String::new() }
    }

    fn run(start: Balance, kind: MovementKind, q: i64) -> Result<Balance, Violation> {
        let mut b = start;
        for d in deltas(&posting(kind, q)) {
            b = apply("stock", &b, &d, true)?;
        }
        Ok(b)
    }

    #[test]
    fn movements_move_the_right_quantities() {
        let b = Balance { on_hand: 10, reserved: 3 };
        assert_eq!(run(b.clone(), MovementKind::Receive, 5).unwrap(), Balance { on_hand: 15, reserved: 3 });
        assert_eq!(run(b.clone(), MovementKind::Issue, 7).unwrap(), Balance { on_hand: 3, reserved: 3 });
        assert_eq!(run(b.clone(), MovementKind::Reserve, 7).unwrap(), Balance { on_hand: 10, reserved: 10 });
        assert_eq!(run(b.clone(), MovementKind::Release, 3).unwrap(), Balance { on_hand: 10, reserved: 0 });
        assert_eq!(run(b.clone(), MovementKind::IssueReserved, 3).unwrap(), Balance { on_hand: 7, reserved: 0 });
        assert_eq!(run(b.clone(), MovementKind::Adjust, -2).unwrap(), Balance { on_hand: 8, reserved: 3 });
    }

    #[test]
    fn available_never_goes_below_zero() {
        let b = Balance { on_hand: 10, reserved: 3 };
        let v = run(b.clone(), MovementKind::Issue, 8).unwrap_err();
        assert_eq!((v.requested, v.available), (8, 7));
        assert_eq!(run(b.clone(), MovementKind::Reserve, 8).unwrap_err().available, 7);
        assert_eq!(run(b.clone(), MovementKind::Release, 4).unwrap_err().available, 3);
        assert_eq!(run(b, MovementKind::IssueReserved, 4).unwrap_err().available, 3);
    }
}
