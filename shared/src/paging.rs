//! Keyset paging, for every list of the API: `limit`, opaque cursors and the
//! `{"items": [...], "next_cursor": ...}` page.
//!
//! A list statement is asked for one row more than the page holds ([`PageRequest::fetch`]); the
//! extra row only says that another page follows, and the cursor names the last item shown, so an
//! item inserted while someone pages through never shifts later pages.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use lambda_http::Request;
use serde::Serialize;
use uuid::Uuid;

use crate::domain::in_rfc3339_range;
use crate::http::{ApiError, query_param};

/// A position in a list, opaque to the caller: what `next_cursor` holds and `cursor` sends back.
pub trait Cursor: Sized {
    fn encode(&self) -> String;
    /// `None` for anything this API did not give out (or could not have).
    fn decode(text: &str) -> Option<Self>;
}

/// What a list request asks for: at most `limit` items, after the cursor's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<C> {
    pub limit: i64,
    /// `None`: from the start of the list.
    pub after: Option<C>,
}

impl<C: Cursor> PageRequest<C> {
    /// `limit` (absent → `default`; not a whole number → `400`; outside 1..=`max` → `422`) and
    /// `cursor` (absent → from the start; not one this API gave out → `400`).
    pub fn from_request(req: &Request, default: i64, max: i64) -> Result<Self, ApiError> {
        let limit = match query_param(req, "limit") {
            None => default,
            Some(text) => text
                .parse()
                .map_err(|_| ApiError::bad_query("limit", "limit must be a whole number"))?,
        };
        if !(1..=max).contains(&limit) {
            return Err(ApiError::validation(
                "limit",
                format!("limit must be between 1 and {max}"),
            ));
        }
        let after = match query_param(req, "cursor") {
            None => None,
            Some(text) => Some(C::decode(&text).ok_or_else(|| {
                ApiError::bad_query("cursor", "cursor is not one this API gave out")
            })?),
        };
        Ok(Self { limit, after })
    }
}

impl<C> PageRequest<C> {
    /// How many rows to ask the statement for: one more than the page, to see whether another
    /// page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `items` holds up to `limit + 1` rows (see [`PageRequest::fetch`]); `cursor_of` names an
    /// item's position.
    pub fn new<C: Cursor>(mut items: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> C) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(|last| cursor_of(last).encode())
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

/// The position in a newest-first list ordered by (time, id): devices by `created_at`, alerts by
/// `triggered_at`, rules by `created_at`. Encoded as base64url of the time in microseconds and
/// the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeId {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl TimeId {
    /// Where a newest-first list starts: after everything.
    pub fn start() -> Self {
        Self {
            // 9999-12-31T23:59:59Z: later than anything stored, and representable in Postgres.
            at: DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default(),
            id: Uuid::max(),
        }
    }

    /// The request's position, or the start.
    pub fn or_start(after: Option<Self>) -> Self {
        after.unwrap_or_else(Self::start)
    }
}

impl Cursor for TimeId {
    fn encode(&self) -> String {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.at.timestamp_micros().to_be_bytes());
        bytes[8..].copy_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(text: &str) -> Option<Self> {
        let bytes: [u8; 24] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
        let (micros, id) = bytes.split_at(8);
        Some(Self {
            at: micros_time(micros)?,
            id: Uuid::from_slice(id).ok()?,
        })
    }
}

/// A cursor's time: 8 big-endian bytes of Unix microseconds, within the years the API speaks
/// (a forged cursor can name a time Postgres cannot hold).
pub fn micros_time(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let micros = i64::from_be_bytes(bytes.try_into().ok()?);
    DateTime::from_timestamp_micros(micros).filter(|&t| in_rfc3339_range(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_id_cursors_round_trip_and_garbage_is_refused() {
        let cursor = TimeId {
            at: DateTime::from_timestamp_micros(1_795_687_200_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(TimeId::decode(&cursor.encode()), Some(cursor));
        assert_eq!(
            TimeId::decode(&TimeId::start().encode()),
            Some(TimeId::start())
        );
        for bad in [
            "",
            "abc",
            "!!!!",
            &"A".repeat(33),
            &URL_SAFE_NO_PAD.encode([0u8; 23]),
        ] {
            assert_eq!(TimeId::decode(bad), None, "{bad}");
        }
        // The right shape, but about 10,000 BC.
        let mut ancient = (-377_000_000_000_000_000i64).to_be_bytes().to_vec();
        ancient.extend_from_slice(Uuid::nil().as_bytes());
        assert_eq!(TimeId::decode(&URL_SAFE_NO_PAD.encode(ancient)), None);
    }

    #[test]
    fn a_page_keeps_limit_items_and_names_the_last_one() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let ids: Vec<TimeId> = (0..3)
            .map(|s| TimeId {
                at: at(100 - s),
                id: Uuid::new_v4(),
            })
            .collect();
        let page = Page::new(ids.clone(), 2, |c| *c);
        assert_eq!(page.items, ids[..2]);
        assert_eq!(page.next_cursor, Some(ids[1].encode()));
        let last = Page::new(ids[..2].to_vec(), 2, |c| *c);
        assert_eq!(last.next_cursor, None);
    }
}
