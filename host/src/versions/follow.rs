//! What one node knows of the fleet's release book, and whether the state
//! still holds that book.
//!
//! Every book carries a lineage (a random id made when the book is first
//! written) and a version bumped by every change. A node remembers the
//! lineage and version of the book it last applied. A later read is
//! judged against that:
//!
//! - the same lineage at the same or a newer version, or another lineage
//!   (a new book an operator started): the node follows it;
//! - no book at all where the node followed one (Redis lost its data), or
//!   the same lineage at an older version (Redis came back from an older
//!   snapshot): the book is **lost**. The node keeps serving what it
//!   serves, logs a WARN once per change of situation, sets
//!   `sluice_release_book_lost` to 1 and says so in `/readyz` and
//!   `/admin/releases`, until an operator starts a new book (a push with
//!   `--new-book`) or the followed book comes back.
//!
//! A node never writes a book on its own, so a lost book is only ever
//! replaced by an operator's action.

use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::time::SystemTime;

use super::unix_ms;

/// Which book, at which version: its lineage and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookId<'a> {
    pub lineage: &'a str,
    pub version: u64,
}

/// Whether the state still holds the book this node follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BookStatus {
    /// Following the book in the state (or there never was one).
    Ok,
    /// The book this node followed is gone from the state.
    Missing,
    /// The state holds an older version of the book this node followed.
    Regressed,
}

/// This node's view of the release book, as `/readyz` and the admin API
/// show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BookView {
    pub status: BookStatus,
    /// The lineage of the book this node last applied (none: it never saw
    /// one).
    pub lineage: Option<String>,
    /// That book's version.
    pub version: u64,
    /// The version the state holds instead, when it went backwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_version: Option<u64>,
    /// When the status last changed, in Unix milliseconds.
    pub since_ms: u64,
    /// What happened and what to do, while the book is lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What to make of a book read from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Apply it (and remember it as followed).
    Follow,
    /// There is no book and this node never followed one.
    Nothing,
    /// The followed book is lost: keep serving, say so.
    Lost,
}

/// This node's view of the book, and the metric that reports a lost one.
pub struct Follower {
    view: Mutex<BookView>,
    /// Held while a node reads and judges the book and while it writes
    /// one, so a poll never judges the book this node just wrote as older
    /// than the one it remembers.
    turn: tokio::sync::Mutex<()>,
    lost: Gauge,
}

const RECOVERY: &str = "keeping the plugins this node serves; \
    re-push each slot's release with `sluice plugin push --new-book` to start a new book \
    (see docs/deploy.md, \"Push a plugin release to the fleet\")";

impl Follower {
    /// A node that has followed no book yet; registers
    /// `sluice_release_book_lost` in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let lost = Gauge::default();
        registry.register(
            "sluice_release_book_lost",
            "1 while the plugin release book this node followed is missing from the state \
             or older there; the node keeps serving its releases",
            lost.clone(),
        );
        Self {
            view: Mutex::new(BookView {
                status: BookStatus::Ok,
                lineage: None,
                version: 0,
                found_version: None,
                since_ms: unix_ms(SystemTime::now()),
                message: None,
            }),
            turn: tokio::sync::Mutex::new(()),
            lost,
        }
    }

    /// This node's view of the book.
    pub fn view(&self) -> BookView {
        self.view.lock().clone()
    }

    /// Waits for this node's turn to read, judge or write the book.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// What to make of `found` (the book in the state, if any).
    pub fn judge(&self, found: Option<BookId<'_>>) -> Judgement {
        let view = self.view.lock();
        match (view.lineage.as_deref(), found) {
            (None, None) => Judgement::Nothing,
            (None, Some(_)) => Judgement::Follow,
            (Some(_), None) => Judgement::Lost,
            (Some(lineage), Some(book)) if book.lineage == lineage => {
                if book.version >= view.version {
                    Judgement::Follow
                } else {
                    Judgement::Lost
                }
            }
            // A book an operator started after the followed one was lost.
            (Some(_), Some(_)) => Judgement::Follow,
        }
    }

    /// Whether `book` is the one this node follows now (its lineage and
    /// version), so applying it cannot undo a newer one.
    pub fn is_current(&self, book: BookId<'_>) -> bool {
        let view = self.view.lock();
        view.lineage.as_deref() == Some(book.lineage) && view.version == book.version
    }

    /// Remembers `book` as the one this node follows.
    pub fn follow(&self, book: BookId<'_>) {
        let mut view = self.view.lock();
        match view.lineage.as_deref() {
            Some(old) if old != book.lineage => tracing::warn!(
                old_lineage = old,
                old_version = view.version,
                lineage = book.lineage,
                version = book.version,
                "following a new plugin release book that an operator started"
            ),
            _ if view.status != BookStatus::Ok => tracing::warn!(
                lineage = book.lineage,
                version = book.version,
                "the plugin release book this node followed is back in the state"
            ),
            _ => {}
        }
        if view.status != BookStatus::Ok {
            view.since_ms = unix_ms(SystemTime::now());
        }
        view.status = BookStatus::Ok;
        view.lineage = Some(book.lineage.to_string());
        view.version = book.version;
        view.found_version = None;
        view.message = None;
        self.lost.set(0);
    }

    /// Records that the followed book is lost (`found`: what the state
    /// holds instead); logs a WARN when the situation changed.
    pub fn lost(&self, found: Option<BookId<'_>>) {
        let (status, found_version) = match found {
            None => (BookStatus::Missing, None),
            Some(b) => (BookStatus::Regressed, Some(b.version)),
        };
        let mut view = self.view.lock();
        if view.status == status && view.found_version == found_version {
            return;
        }
        let lineage = view.lineage.clone().unwrap_or_default();
        let what = match found_version {
            None => format!(
                "the plugin release book this node followed (lineage {lineage}, version {}) \
                 is missing from the state (did Redis lose its data?)",
                view.version
            ),
            Some(v) => format!(
                "the state holds version {v} of the plugin release book this node followed \
                 at version {} (lineage {lineage}; was Redis restored from an older snapshot?)",
                view.version
            ),
        };
        tracing::warn!(
            lineage = %lineage,
            version = view.version,
            found_version,
            "{what}; {RECOVERY}"
        );
        view.status = status;
        view.found_version = found_version;
        view.since_ms = unix_ms(SystemTime::now());
        view.message = Some(format!("{what}; {RECOVERY}"));
        self.lost.set(1);
    }

    /// What happened and what to do while the followed book is lost.
    pub fn lost_message(&self) -> Option<String> {
        self.view.lock().message.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(lineage: &str, version: u64) -> BookId<'_> {
        BookId { lineage, version }
    }

    #[test]
    fn a_book_that_vanishes_or_goes_back_is_lost_a_new_lineage_is_followed() {
        let f = Follower::new(&mut Registry::default());
        assert_eq!(f.judge(None), Judgement::Nothing);
        assert_eq!(f.judge(Some(book("a", 3))), Judgement::Follow);
        f.follow(book("a", 3));
        assert!(f.is_current(book("a", 3)));
        assert!(!f.is_current(book("a", 2)));
        assert_eq!(f.judge(Some(book("a", 3))), Judgement::Follow);
        assert_eq!(f.judge(Some(book("a", 4))), Judgement::Follow);
        assert_eq!(f.judge(Some(book("a", 2))), Judgement::Lost);
        assert_eq!(f.judge(None), Judgement::Lost);
        assert_eq!(f.judge(Some(book("b", 1))), Judgement::Follow);

        f.lost(None);
        let view = f.view();
        assert_eq!(view.status, BookStatus::Missing);
        assert!(f.lost_message().unwrap().contains("--new-book"));
        assert_eq!(f.lost.get(), 1);
        f.lost(Some(book("a", 2)));
        assert_eq!(f.view().status, BookStatus::Regressed);
        assert_eq!(f.view().found_version, Some(2));

        f.follow(book("b", 1));
        let view = f.view();
        assert_eq!(view.status, BookStatus::Ok);
        assert_eq!(view.lineage.as_deref(), Some("b"));
        assert_eq!(view.message, None);
        assert_eq!(f.lost.get(), 0);
    }
}
