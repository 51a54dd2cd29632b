//! Weekly windows in local time: whether an instant (Unix milliseconds) is
//! inside one.

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;
/// Minutes in a day: `24:00`, allowed as a window's end.
pub(crate) const END_OF_DAY: u16 = 24 * 60;

/// Day names as written in the config, Monday first (bit 0).
pub(crate) const DAYS: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// A set of weekdays, bit 0 = Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Days(u8);

impl Days {
    pub(crate) const ALL: Days = Days(0b111_1111);
    pub(crate) const NONE: Days = Days(0);

    /// The day named `name` (`"sat"` or `"saturday"`, any case).
    pub(crate) fn parse_one(name: &str) -> Option<Days> {
        let name = name.trim().to_ascii_lowercase();
        DAYS.iter()
            .position(|(short, long)| name == *short || name == *long)
            .map(|i| Days(1 << i))
    }

    pub(crate) fn with(self, other: Days) -> Days {
        Days(self.0 | other.0)
    }

    /// `weekday`: 0 = Monday … 6 = Sunday.
    fn contains(self, weekday: u8) -> bool {
        self.0 & (1 << weekday) != 0
    }
}

/// One window: from `from` to `to` (minutes after local midnight, `to`
/// exclusive) on each day in `days`. When `to` is not after `from` the
/// window runs past midnight into the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) days: Days,
    pub(crate) from: u16,
    pub(crate) to: u16,
}

impl Window {
    /// Whether local `weekday`, `minute` (0..1440) is inside.
    fn contains(&self, weekday: u8, minute: u16) -> bool {
        if self.from < self.to {
            self.days.contains(weekday) && self.from <= minute && minute < self.to
        } else {
            // Past midnight: the evening part belongs to a listed day, the
            // morning part to the day after one.
            let yesterday = (weekday + 6) % 7;
            (self.days.contains(weekday) && minute >= self.from)
                || (self.days.contains(yesterday) && minute < self.to)
        }
    }
}

/// The local weekday (0 = Monday) and minute of the day at `wall_ms`
/// (Unix milliseconds) in a zone `offset_minutes` east of UTC.
pub(crate) fn local_time(wall_ms: u64, offset_minutes: i16) -> (u8, u16) {
    let local = i64::try_from(wall_ms).unwrap_or(i64::MAX) + i64::from(offset_minutes) * MINUTE_MS;
    let day = local.div_euclid(DAY_MS);
    // 1970-01-01, day 0, was a Thursday (3 with Monday = 0).
    let weekday = (day + 3).rem_euclid(7);
    let minute = local.rem_euclid(DAY_MS) / MINUTE_MS;
    // Both are in range by construction (0..7, 0..1440).
    (
        u8::try_from(weekday).unwrap_or(0),
        u16::try_from(minute).unwrap_or(0),
    )
}

/// Whether `wall_ms` falls in any of `windows`.
pub(crate) fn in_any(windows: &[Window], wall_ms: u64, offset_minutes: i16) -> bool {
    let (weekday, minute) = local_time(wall_ms, offset_minutes);
    windows.iter().any(|w| w.contains(weekday, minute))
}

/// `"HH:MM"` (24-hour, `H:MM` too) as minutes after midnight; `24:00` only
/// when `allow_end_of_day`.
pub(crate) fn parse_time(s: &str, allow_end_of_day: bool) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time of day \"HH:MM\"");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let digits = |t: &str, max_len: usize| {
        (!t.is_empty() && t.len() <= max_len && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u16>().ok())
            .flatten()
    };
    let (Some(h), Some(m)) = (digits(h, 2), digits(m, 2).filter(|_| m.len() == 2)) else {
        return Err(bad());
    };
    if h == 24 && m == 0 {
        return if allow_end_of_day {
            Ok(END_OF_DAY)
        } else {
            Err(format!("{s:?}: a window cannot start at 24:00 (use 00:00)"))
        };
    }
    if h > 23 || m > 59 {
        return Err(format!("{s:?} is not a time of day (00:00 to 23:59)"));
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2024-01-01 00:00 UTC (`date -u -d 2024-01-01 +%s`).
    const MONDAY: u64 = 1_704_067_200_000;

    #[test]
    fn local_time_knows_the_weekday_and_minute() {
        assert_eq!(local_time(MONDAY, 0), (0, 0));
        assert_eq!(
            local_time(MONDAY + 5 * 86_400_000 + 90 * 60_000, 0),
            (5, 90)
        );
        assert_eq!(local_time(MONDAY - 1, 0), (6, 1439), "a Sunday, 23:59");
        assert_eq!(local_time(MONDAY, -60), (6, 1380), "UTC-1: Sunday 23:00");
        assert_eq!(local_time(MONDAY, 330), (0, 330), "UTC+5:30");
        assert_eq!(local_time(0, 0), (3, 0), "the epoch was a Thursday");
        assert_eq!(local_time(0, -1), (2, 1439), "before the epoch");
    }

    #[test]
    fn times_parse_strictly() {
        assert_eq!(parse_time("00:00", false), Ok(0));
        assert_eq!(parse_time("2:05", false), Ok(125));
        assert_eq!(parse_time("23:59", false), Ok(1439));
        assert_eq!(parse_time("24:00", true), Ok(END_OF_DAY));
        for bad in [
            "24:00", "24:01", "12:60", "1200", "12:5", "-1:00", "12:00:00", "", "ab:cd", "123:00",
        ] {
            assert!(parse_time(bad, false).is_err(), "{bad}");
        }
    }
}
