//! Listing batches a page at a time, newest first: OpenAI's `GET /v1/batches?limit=&after=`
//! and Anthropic's `GET /v1/messages/batches?limit=&after_id=&before_id=`, whose cursors name a
//! batch of the list. A client that lost its state (a crash between create and store) finds
//! its batches again this way: by `metadata` on OpenAI, by the ids it stored on Anthropic.
//!
//! Batches are ordered by their number (creation order, even among batches created at the
//! same paused instant), so a page never skips nor repeats a batch while others are created:
//! new batches go to the front, before the first page. A cursor that names no batch is a 400
//! (the providers do not document that case; a loud answer catches a client's bug).

use std::cmp::Reverse;
use std::fmt;
use std::ops::Range;

use http::{Response, Uri};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{anthropic, bad_request, json_ok, openai};
use crate::body::SimBody;
use crate::dialect::Dialect;
use crate::route::query_param;
use crate::state::Shared;
use crate::stats::LogEntry;

/// `GET /v1/batches`: a page of OpenAI batches (`limit`, `after`), each settled if due.
pub(super) fn batches(
    shared: &Shared,
    uri: &Uri,
    entry: &mut LogEntry,
    now: Instant,
) -> Response<SimBody> {
    let dialect = Dialect::OpenAi;
    let query = match Query::openai(uri) {
        Ok(query) => query,
        Err(message) => return bad_request(shared, dialect, entry, message),
    };
    let ids = {
        let state = shared.lock();
        let numbered = state.batches.batches.iter();
        newest_first(numbered.map(|(id, batch)| (batch.ordinal, id)))
    };
    let Some(page) = query.page(&ids) else {
        let message = format!(
            "Invalid 'after': no batch found with id '{}'.",
            query.cursor
        );
        return bad_request(shared, dialect, entry, message);
    };
    let ids = &ids[page.range];
    for id in ids {
        openai::settle(shared, id, now);
    }
    let data: Vec<Value> = {
        let state = shared.lock();
        let batches = &state.batches.batches;
        ids.iter()
            .filter_map(|id| batches.get(id).map(|batch| batch.object(now)))
            .collect()
    };
    let list = json!({
        "object": "list",
        "data": data,
        "first_id": ids.first(),
        "last_id": ids.last(),
        "has_more": page.has_more,
    });
    json_ok(shared, dialect, entry.seq, &list)
}

/// `GET /v1/messages/batches`: a page of message batches (`limit`, `after_id` or
/// `before_id`), each settled if due.
pub(super) fn message_batches(
    shared: &Shared,
    uri: &Uri,
    entry: &mut LogEntry,
    now: Instant,
) -> Response<SimBody> {
    let dialect = Dialect::Anthropic;
    let query = match Query::anthropic(uri) {
        Ok(query) => query,
        Err(message) => return bad_request(shared, dialect, entry, message),
    };
    let ids = {
        let state = shared.lock();
        let numbered = state.batches.message_batches.iter();
        newest_first(numbered.map(|(id, batch)| (batch.ordinal, id)))
    };
    let Some(page) = query.page(&ids) else {
        let field = match query.cursor {
            Cursor::Before(_) => "before_id",
            Cursor::After(_) | Cursor::Newest => "after_id",
        };
        let message = format!("{field}: no message batch found with id '{}'", query.cursor);
        return bad_request(shared, dialect, entry, message);
    };
    let ids = &ids[page.range];
    for id in ids {
        anthropic::settle(shared, id, now);
    }
    let data: Vec<Value> = {
        let state = shared.lock();
        let batches = &state.batches.message_batches;
        ids.iter()
            .filter_map(|id| batches.get(id).map(|batch| batch.object(id, now)))
            .collect()
    };
    let list = json!({
        "data": data,
        "has_more": page.has_more,
        "first_id": ids.first(),
        "last_id": ids.last(),
    });
    json_ok(shared, dialect, entry.seq, &list)
}

/// Where a page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// The newest batches.
    Newest,
    /// The batches created just before this one: the next page.
    After(String),
    /// The batches created just after this one: the previous page.
    Before(String),
}

impl fmt::Display for Cursor {
    /// The batch id it names (nothing for [`Cursor::Newest`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Newest => Ok(()),
            Self::After(id) | Self::Before(id) => f.write_str(id),
        }
    }
}

/// What a list request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) limit: usize,
    pub(crate) cursor: Cursor,
}

/// A page: the part of the list it covers, and whether more lie beyond it in its direction
/// (older batches after an `after` page or the first page, newer ones before a `before` page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) range: Range<usize>,
    pub(crate) has_more: bool,
}

/// The ids of numbered batches, newest (highest number) first.
pub(super) fn newest_first<'a>(numbered: impl Iterator<Item = (u64, &'a String)>) -> Vec<String> {
    let mut numbered: Vec<(u64, &String)> = numbered.collect();
    numbered.sort_unstable_by_key(|&(ordinal, _)| Reverse(ordinal));
    numbered.into_iter().map(|(_, id)| id.clone()).collect()
}

/// A query parameter, when set to something.
fn param(uri: &Uri, name: &str) -> Option<String> {
    query_param(uri, name).filter(|value| !value.is_empty())
}

impl Query {
    /// OpenAI's `GET /v1/batches` query: `limit` from 1 to 100 (20 by default), `after`.
    pub(crate) fn openai(uri: &Uri) -> Result<Self, String> {
        let limit = match param(uri, "limit") {
            None => 20,
            Some(text) => match text.parse::<i64>() {
                Err(_) => {
                    return Err(
                        "Invalid type for 'limit': expected an integer, but got a string instead."
                            .into(),
                    );
                }
                Ok(n) if n < 1 => {
                    return Err(format!(
                        "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {n} instead."
                    ));
                }
                Ok(n) if n > 100 => {
                    return Err(format!(
                        "Invalid 'limit': integer above maximum value. Expected a value <= 100, but got {n} instead."
                    ));
                }
                Ok(n) => n.unsigned_abs() as usize,
            },
        };
        let cursor = param(uri, "after").map_or(Cursor::Newest, Cursor::After);
        Ok(Self { limit, cursor })
    }

    /// Anthropic's `GET /v1/messages/batches` query: `limit` from 1 to 1000 (20 by default),
    /// and `after_id` or `before_id` (not both).
    pub(crate) fn anthropic(uri: &Uri) -> Result<Self, String> {
        let limit = match param(uri, "limit") {
            None => 20,
            Some(text) => match text.parse::<i64>() {
                Err(_) => {
                    return Err(
                        "limit: Input should be a valid integer, unable to parse string as an integer"
                            .into(),
                    );
                }
                Ok(n) if n < 1 => {
                    return Err("limit: Input should be greater than or equal to 1".into());
                }
                Ok(n) if n > 1000 => {
                    return Err("limit: Input should be less than or equal to 1000".into());
                }
                Ok(n) => n.unsigned_abs() as usize,
            },
        };
        let cursor = match (param(uri, "after_id"), param(uri, "before_id")) {
            (None, None) => Cursor::Newest,
            (Some(after), None) => Cursor::After(after),
            (None, Some(before)) => Cursor::Before(before),
            (Some(_), Some(_)) => {
                return Err("after_id, before_id: at most one of them may be set".into());
            }
        };
        Ok(Self { limit, cursor })
    }

    /// The page of `ids` (newest first) the query names; `None` if its cursor names none of
    /// them.
    pub(crate) fn page<S: AsRef<str>>(&self, ids: &[S]) -> Option<Page> {
        let position = |cursor: &str| ids.iter().position(|id| id.as_ref() == cursor);
        let page = match &self.cursor {
            Cursor::Newest => {
                let end = self.limit.min(ids.len());
                Page {
                    range: 0..end,
                    has_more: end < ids.len(),
                }
            }
            Cursor::After(cursor) => {
                let start = position(cursor)? + 1;
                let end = start.saturating_add(self.limit).min(ids.len());
                Page {
                    range: start..end,
                    has_more: end < ids.len(),
                }
            }
            Cursor::Before(cursor) => {
                let end = position(cursor)?;
                let start = end.saturating_sub(self.limit);
                Page {
                    range: start..end,
                    has_more: start > 0,
                }
            }
        };
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(query: &str) -> Uri {
        format!("http://sim/v1/batches?{query}").parse().unwrap()
    }

    #[test]
    fn openai_queries() {
        let query = Query::openai(&uri("")).unwrap();
        assert_eq!((query.limit, query.cursor), (20, Cursor::Newest));
        let query = Query::openai(&uri("limit=100&after=batch_1")).unwrap();
        assert_eq!(
            (query.limit, query.cursor),
            (100, Cursor::After("batch_1".into()))
        );
        // Anthropic's cursors mean nothing here.
        let query = Query::openai(&uri("before_id=x&after=")).unwrap();
        assert_eq!(query.cursor, Cursor::Newest);
        for (bad, expected) in [
            ("limit=0", "below minimum"),
            ("limit=-3", "got -3"),
            ("limit=101", "<= 100"),
            ("limit=ten", "expected an integer"),
        ] {
            let error = Query::openai(&uri(bad)).unwrap_err();
            assert!(error.contains(expected), "{bad}: {error}");
            assert!(error.contains("'limit'"), "{error}");
        }
    }

    #[test]
    fn anthropic_queries() {
        let query = Query::anthropic(&uri("limit=1000&before_id=m")).unwrap();
        assert_eq!(
            (query.limit, query.cursor),
            (1000, Cursor::Before("m".into()))
        );
        let query = Query::anthropic(&uri("after_id=m")).unwrap();
        assert_eq!((query.limit, query.cursor), (20, Cursor::After("m".into())));
        for bad in ["limit=0", "limit=1001", "limit=x", "after_id=a&before_id=b"] {
            assert!(Query::anthropic(&uri(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn newest_is_the_highest_number() {
        let ids = ["b".to_owned(), "c".to_owned(), "a".to_owned()];
        let numbered = [(2, &ids[0]), (10, &ids[1]), (1, &ids[2])];
        assert_eq!(newest_first(numbered.into_iter()), ["c", "b", "a"]);
    }

    #[test]
    fn pages_walk_both_ways() {
        let ids = ["e", "d", "c", "b", "a"];
        let query = |limit, cursor| Query { limit, cursor };
        let page = |q: Query| q.page(&ids).map(|p| (ids[p.range].to_vec(), p.has_more));
        assert_eq!(page(query(2, Cursor::Newest)), Some((vec!["e", "d"], true)));
        assert_eq!(
            page(query(2, Cursor::After("d".into()))),
            Some((vec!["c", "b"], true))
        );
        assert_eq!(
            page(query(2, Cursor::After("b".into()))),
            Some((vec!["a"], false))
        );
        assert_eq!(
            page(query(2, Cursor::After("a".into()))),
            Some((vec![], false))
        );
        assert_eq!(page(query(9, Cursor::Newest)), Some((ids.to_vec(), false)));
        assert_eq!(
            page(query(2, Cursor::Before("b".into()))),
            Some((vec!["d", "c"], true))
        );
        assert_eq!(
            page(query(2, Cursor::Before("d".into()))),
            Some((vec!["e"], false))
        );
        assert_eq!(page(query(2, Cursor::After("zz".into()))), None);
        assert_eq!(
            query(2, Cursor::Newest).page::<&str>(&[]),
            Some(Page {
                range: 0..0,
                has_more: false
            })
        );
    }
}
