//! Budget periods (UTC day, UTC month, total) and the calendar arithmetic
//! they need, without a date library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Month,
    Total,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Day, Period::Month, Period::Total];

    /// `day`, `month` or `total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// The period containing `now`: `d2026-11-29`, `m2026-11` or `total`.
    pub fn id(self, now: Date) -> String {
        match self {
            Period::Day => format!("d{now}"),
            Period::Month => format!("m{:04}-{:02}", now.year, now.month),
            Period::Total => "total".to_owned(),
        }
    }

    /// Time from `now_unix_ms` until this period resets (`None`: never).
    pub fn resets_in(self, now_unix_ms: u64) -> Option<Duration> {
        let today = Date::of_unix_ms(now_unix_ms);
        let next = match self {
            Period::Day => today.days() + 1,
            Period::Month => {
                let (y, m) = if today.month == 12 {
                    (today.year + 1, 1)
                } else {
                    (today.year, today.month + 1)
                };
                Date {
                    year: y,
                    month: m,
                    day: 1,
                }
                .days()
            }
            Period::Total => return None,
        };
        let at = u64::try_from(next).unwrap_or(0) * 86_400_000;
        Some(Duration::from_millis(at.saturating_sub(now_unix_ms).max(1)))
    }

    /// How long a counter of this period is kept after its creation.
    pub fn ttl(self) -> Option<Duration> {
        match self {
            Period::Day => Some(Duration::from_secs(2 * 86_400)),
            Period::Month => Some(Duration::from_secs(32 * 86_400)),
            Period::Total => None,
        }
    }
}

/// A UTC calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl std::fmt::Display for Date {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Date {
    /// Today, UTC.
    pub fn today() -> Date {
        Date::of_unix_ms(unix_ms())
    }

    /// The date of a Unix time in milliseconds.
    pub fn of_unix_ms(ms: u64) -> Date {
        Date::of_days((ms / 86_400_000) as i64)
    }

    /// The date `days` after 1970-01-01 (Howard Hinnant's civil_from_days).
    pub fn of_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date { year, month, day }
    }

    /// Days since 1970-01-01 (days_from_civil).
    pub fn days(self) -> i64 {
        let y = self.year - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Parses `YYYY-MM-DD` (a real date).
    pub fn parse(s: &str) -> Option<Date> {
        let mut parts = s.splitn(3, '-');
        let year: i64 = parts.next()?.parse().ok()?;
        let month: u32 = parts.next()?.parse().ok()?;
        let day: u32 = parts.next()?.parse().ok()?;
        if s.len() != 10 || !(1970..=9999).contains(&year) {
            return None;
        }
        let date = Date { year, month, day };
        (Date::of_days(date.days()) == date).then_some(date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_periods_reset_at_utc_boundaries() {
        let d = Date::of_unix_ms(1_795_996_800_000); // 2026-11-30T00:00:00Z
        assert_eq!(d.to_string(), "2026-11-30");
        assert_eq!(Date::of_days(d.days()), d);
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        assert!(Date::parse("2023-02-29").is_none());
        assert!(Date::parse("2023-2-1").is_none());
        assert_eq!(Period::Month.id(d), "m2026-11");
        assert_eq!(Period::Day.id(d), "d2026-11-30");
        let noon = 1_795_996_800_000 + 12 * 3_600_000;
        assert_eq!(
            Period::Day.resets_in(noon),
            Some(Duration::from_secs(12 * 3600))
        );
        // 2026-12-01T00:00:00Z is 12 h after noon on the 30th, too.
        assert_eq!(
            Period::Month.resets_in(noon),
            Some(Duration::from_secs(12 * 3600))
        );
        assert_eq!(Period::Total.resets_in(noon), None);
        let dec = Date::parse("2026-12-31").unwrap().days() as u64 * 86_400_000;
        assert_eq!(
            Period::Month.resets_in(dec),
            Some(Duration::from_secs(86_400))
        );
    }
}
