//! What the board does when an attempt is lost (its task faulted, its worker died or its
//! lease ran out): run it again at once the first time, back off exponentially while losses
//! keep coming, and hand the ticket to a human once they look like a crash loop. A loss that
//! repeats at once would otherwise start agent after agent for one ticket.

use std::time::Duration;

/// Losses in a row after which the ticket is escalated instead of run again.
pub const MAX_LOSSES_IN_A_ROW: u32 = 5;
/// The wait before the second run; it doubles with every further loss.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// No wait is longer than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLoss {
    /// Run it again now.
    Requeue,
    /// Run it again after this long.
    Backoff(Duration),
    /// Too many in a row: a human looks at it.
    Escalate,
}

/// The answer to the `in_a_row`-th consecutive lost attempt of a ticket (1 for the first).
pub fn after_loss(in_a_row: u32) -> AfterLoss {
    match in_a_row {
        0 | 1 => AfterLoss::Requeue,
        n if n >= MAX_LOSSES_IN_A_ROW => AfterLoss::Escalate,
        n => {
            let doublings = n - 2;
            let d = FIRST_BACKOFF
                .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
                .unwrap_or(MAX_BACKOFF);
            AfterLoss::Backoff(d.min(MAX_BACKOFF))
        }
    }
}

/// How many attempts in a row, counting back from the newest, were lost; `outcomes` in
/// attempt order, each `true` if that attempt was lost.
pub fn losses_in_a_row(lost: impl DoubleEndedIterator<Item = bool>) -> u32 {
    let n = lost.rev().take_while(|l| *l).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let s = Duration::from_secs;
        let cases = [
            (0, AfterLoss::Requeue),
            (1, AfterLoss::Requeue),
            (2, AfterLoss::Backoff(s(10))),
            (3, AfterLoss::Backoff(s(20))),
            (4, AfterLoss::Backoff(s(40))),
            (5, AfterLoss::Escalate),
            (6, AfterLoss::Escalate),
            (u32::MAX, AfterLoss::Escalate),
        ];
        for (n, want) in cases {
            assert_eq!(after_loss(n), want, "{n} losses in a row");
        }
    }

    #[test]
    fn backoff_never_exceeds_the_cap_or_overflows() {
        for n in 2..MAX_LOSSES_IN_A_ROW {
            match after_loss(n) {
                AfterLoss::Backoff(d) => assert!(d <= MAX_BACKOFF && d >= FIRST_BACKOFF),
                other => panic!("{n}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_the_trailing_losses_count() {
        assert_eq!(losses_in_a_row([].into_iter()), 0);
        assert_eq!(losses_in_a_row([true, true, false].into_iter()), 0);
        assert_eq!(losses_in_a_row([true, false, true, true].into_iter()), 2);
        assert_eq!(losses_in_a_row([true, true, true].into_iter()), 3);
    }
}
