//! How long a provider asked us to wait: `retry-after-ms` (OpenAI's precise
//! form) or `retry-after` (RFC 9110: delay-seconds or an HTTP-date).

use std::time::SystemTime;

use http::HeaderMap;

/// Longest wait we believe; a larger (or far-future) value is clamped so a
/// bogus header cannot park a key or a request for days.
pub const MAX_RETRY_AFTER_MS: u64 = 24 * 60 * 60 * 1000;

/// The wait a provider asked for, in milliseconds, or `None` when it sent no
/// usable hint. `retry-after-ms` wins over `retry-after`; an HTTP-date in the
/// past means "now" (0). `now` is the wall clock, passed in for tests.
pub fn retry_after_ms(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let precise = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_millis);
    precise
        .or_else(|| {
            let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
            parse_retry_after(value, now)
        })
        .map(|ms| ms.min(MAX_RETRY_AFTER_MS))
}

/// One `retry-after` value: delay-seconds (fractions tolerated, as some
/// OpenAI-compatible servers send them) or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if value.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return parse_seconds(value);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(now).unwrap_or_default();
    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

fn parse_seconds(value: &str) -> Option<u64> {
    let seconds: f64 = value.parse().ok()?;
    to_millis(seconds * 1000.0)
}

fn parse_millis(value: &str) -> Option<u64> {
    to_millis(value.trim().parse().ok()?)
}

/// Rounds up so "wait 0.4 ms" does not become "retry now".
fn to_millis(ms: f64) -> Option<u64> {
    if !ms.is_finite() || ms < 0.0 {
        return None;
    }
    // Saturating float-to-int cast; values are clamped by the caller.
    Some(ms.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn at(unix_secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs)
    }

    // Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date.
    const RFC_EXAMPLE: u64 = 784_111_777;

    #[test]
    fn delay_seconds() {
        let now = at(RFC_EXAMPLE);
        assert_eq!(
            retry_after_ms(&headers(&[("retry-after", "20")]), now),
            Some(20_000)
        );
        assert_eq!(
            retry_after_ms(&headers(&[("retry-after", " 0 ")]), now),
            Some(0)
        );
        assert_eq!(
            retry_after_ms(&headers(&[("retry-after", "1.5")]), now),
            Some(1_500)
        );
    }

    #[test]
    fn http_dates_in_all_three_formats_are_relative_to_now() {
        let now = at(RFC_EXAMPLE - 30);
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            let map = {
                let mut m = HeaderMap::new();
                m.insert("retry-after", HeaderValue::from_str(date).unwrap());
                m
            };
            assert_eq!(retry_after_ms(&map, now), Some(30_000), "{date}");
        }
    }

    #[test]
    fn a_date_in_the_past_means_now() {
        let map = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(retry_after_ms(&map, at(RFC_EXAMPLE + 3600)), Some(0));
    }

    #[test]
    fn retry_after_ms_wins_and_rounds_up() {
        let now = at(RFC_EXAMPLE);
        let map = headers(&[("retry-after", "20"), ("retry-after-ms", "1234.2")]);
        assert_eq!(retry_after_ms(&map, now), Some(1_235));
        // An unusable precise value falls back to the coarse one.
        let map = headers(&[("retry-after", "2"), ("retry-after-ms", "soon")]);
        assert_eq!(retry_after_ms(&map, now), Some(2_000));
    }

    #[test]
    fn garbage_and_absent_headers_give_none() {
        let now = at(RFC_EXAMPLE);
        assert_eq!(retry_after_ms(&HeaderMap::new(), now), None);
        for bad in ["soon", "-5", "NaN", "inf", "", "Mon, 99 Foo 2024"] {
            let mut map = HeaderMap::new();
            map.insert("retry-after", HeaderValue::from_str(bad).unwrap());
            assert_eq!(retry_after_ms(&map, now), None, "{bad:?}");
        }
    }

    #[test]
    fn absurd_values_are_clamped() {
        let now = at(RFC_EXAMPLE);
        let map = headers(&[("retry-after", "99999999999999999999")]);
        assert_eq!(retry_after_ms(&map, now), Some(MAX_RETRY_AFTER_MS));
        let map = headers(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]);
        assert_eq!(retry_after_ms(&map, now), Some(MAX_RETRY_AFTER_MS));
    }
}
