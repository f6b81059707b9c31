//! Budget windows: calendar days and months (UTC or a fixed offset), or a rolling period.
//!
//! Spend is kept in *slots*, each named by the Unix second it starts at. A calendar window is
//! one slot (the day or month it covers); a rolling window is 24 slots of a 24th of the period
//! each, and a call's spend counts for as long as its slot overlaps the period behind now —
//! at least the whole period and at most one slot more, never less: a rolling budget is never
//! more generous than its limit over any stretch of its length.
//!
//! The calendar is read from the wall clock through [`WallClock`], never from
//! `tokio::time` (paused time cannot move the calendar). Tests inject their own.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current date and time, injectable for tests.
///
/// Any [`tollgate_core::Clock`] is one (its `wall()`), so `tollgate_core::clock::ManualClock`
/// moves calendar windows in tests.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

impl<C: tollgate_core::Clock + fmt::Debug> WallClock for C {
    fn now(&self) -> SystemTime {
        self.wall()
    }
}

/// Slots per rolling window.
const ROLLING_SLOTS: u64 = 24;

/// When a budget's spend starts again from nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// A calendar day, from midnight at the UTC offset (in seconds east of UTC).
    Day {
        /// Seconds east of UTC (`+02:00` is 7200).
        offset: i32,
    },
    /// A calendar month, from midnight on its first day at the offset.
    Month {
        /// Seconds east of UTC.
        offset: i32,
    },
    /// The period just behind now (`24h`: the last 24 hours), sliding.
    Rolling(Duration),
}

impl Window {
    /// A calendar day in UTC.
    pub const DAY: Self = Self::Day { offset: 0 };
    /// A calendar month in UTC.
    pub const MONTH: Self = Self::Month { offset: 0 };

    fn slot_len(self) -> i64 {
        match self {
            Self::Rolling(period) => {
                i64::try_from((period.as_secs() / ROLLING_SLOTS).max(1)).unwrap_or(i64::MAX)
            }
            // Calendar slots are whole windows; their length varies (months).
            Self::Day { .. } | Self::Month { .. } => 0,
        }
    }

    /// The start (Unix seconds) of the slot a charge at `now` goes into.
    pub fn slot_at(self, now: i64) -> i64 {
        match self {
            Self::Day { offset } => {
                let local = now + i64::from(offset);
                local.div_euclid(86_400) * 86_400 - i64::from(offset)
            }
            Self::Month { offset } => {
                let local = now + i64::from(offset);
                let (year, month, _) = civil_from_days(local.div_euclid(86_400));
                days_from_civil(year, month, 1) * 86_400 - i64::from(offset)
            }
            Self::Rolling(_) => {
                let len = self.slot_len();
                now.div_euclid(len) * len
            }
        }
    }

    /// The earliest slot start that still counts at `now`: older slots are past and pruned.
    pub fn counted_from(self, now: i64) -> i64 {
        match self {
            Self::Rolling(period) => {
                let period = i64::try_from(period.as_secs()).unwrap_or(i64::MAX);
                // A slot counts while it overlaps (now - period, now].
                now.saturating_sub(period)
                    .saturating_sub(self.slot_len())
                    .saturating_add(1)
            }
            _ => self.slot_at(now),
        }
    }

    /// When the spend in the slot starting at `slot` stops counting.
    pub fn slot_expires(self, slot: i64) -> i64 {
        match self {
            Self::Day { .. } => slot + 86_400,
            Self::Month { offset } => {
                let local = slot + i64::from(offset);
                let (year, month, _) = civil_from_days(local.div_euclid(86_400));
                let (year, month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                days_from_civil(year, month, 1) * 86_400 - i64::from(offset)
            }
            Self::Rolling(period) => {
                slot + self.slot_len() + i64::try_from(period.as_secs()).unwrap_or(i64::MAX)
            }
        }
    }

    /// The starts of the slots that count at `now`, oldest first: those a ledger keeps after
    /// [`prune`](crate::ledger) (one for a calendar window; up to 25 for a rolling one).
    #[cfg(feature = "redis")]
    pub(crate) fn counted_slots(self, now: i64) -> Vec<i64> {
        let (from, current) = (self.counted_from(now), self.slot_at(now));
        match self {
            Self::Rolling(_) => {
                let len = self.slot_len();
                let first = current - (current - from).div_euclid(len) * len;
                (0..)
                    .map(|i| first + i * len)
                    .take_while(|&s| s <= current)
                    .collect()
            }
            Self::Day { .. } | Self::Month { .. } => vec![current],
        }
    }

    /// The UTC offset calendar times are shown at.
    pub fn offset(self) -> i32 {
        match self {
            Self::Day { offset } | Self::Month { offset } => offset,
            Self::Rolling(_) => 0,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Day { .. } => f.write_str("day"),
            Self::Month { .. } => f.write_str("month"),
            Self::Rolling(period) => write!(
                f,
                "rolling {}",
                tollgate_core::config::duration::format(*period)
            ),
        }
    }
}

/// Unix seconds of `time` (before 1970: negative).
pub(crate) fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The time at Unix second `secs`.
pub(crate) fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Reads `"+02:00"`, `"-05:30"`, `"Z"` or `"UTC"` as seconds east of UTC.
pub fn parse_utc_offset(text: &str) -> Option<i32> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    (hours <= 14 && minutes < 60).then_some(sign * (hours * 3_600 + minutes * 60))
}

/// `2025-06-02T00:00:00+02:00`: Unix second `secs` at `offset` seconds east of UTC.
pub fn format_rfc3339(secs: i64, offset: i32) -> String {
    let local = secs + i64::from(offset);
    let (year, month, day) = civil_from_days(local.div_euclid(86_400));
    let in_day = local.rem_euclid(86_400);
    let zone = if offset == 0 {
        "Z".to_owned()
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        format!("{sign}{:02}:{:02}", abs / 3_600, abs % 3_600 / 60)
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{zone}",
        in_day / 3_600,
        in_day % 3_600 / 60,
        in_day % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: (i64, u32, u32), hms: (i64, i64, i64), offset: i32) -> i64 {
        days_from_civil(date.0, date.1, date.2) * 86_400 + hms.0 * 3_600 + hms.1 * 60 + hms.2
            - i64::from(offset)
    }

    #[test]
    fn dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 10_957, 19_000, 20_454, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(0, 7_200), "1970-01-01T02:00:00+02:00");
        assert_eq!(format_rfc3339(0, -19_800), "1969-12-31T18:30:00-05:30");
    }

    #[test]
    fn a_day_starts_at_midnight_at_its_offset() {
        let plus2 = 7_200;
        let day = Window::Day { offset: plus2 };
        // 23:59 on 31 January, local: still January 31st's window.
        let late = at((2025, 1, 31), (23, 59, 0), plus2);
        assert_eq!(day.slot_at(late), at((2025, 1, 31), (0, 0, 0), plus2));
        assert_eq!(
            day.slot_expires(day.slot_at(late)),
            at((2025, 2, 1), (0, 0, 0), plus2)
        );
        // 22:30 UTC is already the next day at +02:00.
        let utc = at((2025, 1, 31), (22, 30, 0), 0);
        assert_eq!(day.slot_at(utc), at((2025, 2, 1), (0, 0, 0), plus2));
        assert_eq!(Window::DAY.slot_at(utc), at((2025, 1, 31), (0, 0, 0), 0));
    }

    #[test]
    fn a_month_runs_from_the_first_to_the_first() {
        let offset = -18_000;
        let month = Window::Month { offset };
        let feb = at((2024, 2, 29), (23, 0, 0), offset);
        let start = month.slot_at(feb);
        assert_eq!(start, at((2024, 2, 1), (0, 0, 0), offset));
        assert_eq!(
            month.slot_expires(start),
            at((2024, 3, 1), (0, 0, 0), offset)
        );
        let dec = at((2024, 12, 31), (23, 59, 59), offset);
        assert_eq!(
            month.slot_expires(month.slot_at(dec)),
            at((2025, 1, 1), (0, 0, 0), offset)
        );
    }

    #[test]
    fn rolling_spend_counts_for_at_least_the_period() {
        let window = Window::Rolling(Duration::from_secs(24 * 3_600));
        let charged = 1_000_000 + 1_800; // half-way through an hour slot
        let slot = window.slot_at(charged);
        assert_eq!(slot % 3_600, 0);
        assert!(window.slot_expires(slot) >= charged + 24 * 3_600);
        assert!(window.slot_expires(slot) <= charged + 25 * 3_600);
        // Still counted just before it expires, no longer at its expiry.
        assert!(window.counted_from(window.slot_expires(slot) - 1) <= slot);
        assert!(window.counted_from(window.slot_expires(slot)) > slot);
    }

    #[cfg(feature = "redis")]
    #[test]
    fn the_counted_slots_are_those_a_ledger_keeps() {
        let window = Window::Rolling(Duration::from_secs(24 * 3_600));
        for now in [1_000_000, 1_000_000 + 1_800, 1_003_599, 1_003_600] {
            let slots = window.counted_slots(now);
            let from = window.counted_from(now);
            assert_eq!(*slots.last().unwrap(), window.slot_at(now));
            assert!(slots[0] >= from && slots[0] - 3_600 < from, "{now}");
            assert!(slots.windows(2).all(|w| w[1] - w[0] == 3_600));
        }
        assert_eq!(Window::DAY.counted_slots(90_000), vec![86_400]);
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_utc_offset("+02:00"), Some(7_200));
        assert_eq!(parse_utc_offset("-05:30"), Some(-19_800));
        assert_eq!(parse_utc_offset("Z"), Some(0));
        assert_eq!(parse_utc_offset("UTC"), Some(0));
        assert_eq!(parse_utc_offset("2"), None);
        assert_eq!(parse_utc_offset("+25:00"), None);
    }
}
