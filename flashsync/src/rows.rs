//! Reading a view's rows a page at a time, as [`Row`]s or as the
//! application's own types.
//!
//! [`Engine::rows`](crate::Engine::rows) hands out a [`Rows`] cursor: it
//! reads `page` rows per store scan and resumes after the last key, so a
//! view of any size is read in bounded memory. Each page is consistent (one
//! scan); the whole is not one snapshot — rows changed by sync between two
//! pages appear as they are when their page is read. (A full-row view keeps
//! identical rows as copies under one key; a page that ends among them is
//! resumed by reading those copies again, so a row with very many copies
//! costs one scan of them per page.) For a consistent start
//! that stays exact afterwards, use
//! [`Engine::changes_with_rows`](crate::Engine::changes_with_rows).

use std::collections::VecDeque;
use std::sync::Arc;

use flashsync_core::{typed, Key, KeyRange, RelationId, RelationSchema, Row, Store, ViewName};
use serde::de::DeserializeOwned;

use crate::error::EngineError;

/// Rows per store scan unless the caller says otherwise.
pub const DEFAULT_PAGE: usize = 1024;

/// A cursor over a view's rows in key order: see the [module docs](self).
///
/// ```
/// use flashsync::{Engine, KeyRange, Persistence, ViewDef};
/// use flashsync_core::memory::{MemoryStore, MemoryUpstream, TableIdentity};
/// use flashsync_core::row;
///
/// #[derive(serde::Deserialize)]
/// struct User {
///     id: i64,
///     name: String,
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let upstream = MemoryUpstream::new();
/// upstream.create_table("public", "users", &[("id", "int8"), ("name", "text")], TableIdentity::PrimaryKey(vec![0]));
/// for i in 0..2500 {
///     upstream.insert("public", "users", row![i, format!("user {i}")]);
/// }
/// let engine = Engine::builder().store(MemoryStore::new()).origin("postgres:main", upstream.source()).open().await?;
/// engine.define(ViewDef::new("public", "users", Persistence::Materialized, "postgres:main", "public", "users")?).await?;
/// engine.sync("*").await?;
///
/// let mut rows = engine.rows("public.users", KeyRange::default()).await?;
/// let mut seen = 0;
/// while let Some(user) = rows.next_as::<User>().await {
///     let user = user?;
///     assert_eq!(user.name, format!("user {}", user.id));
///     seen += 1;
/// }
/// assert_eq!(seen, 2500);
/// engine.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Rows {
    store: Arc<dyn Store>,
    view: ViewName,
    id: RelationId,
    schema: RelationSchema,
    range: KeyRange,
    page: usize,
    buffered: VecDeque<Row>,
    cursor: Cursor,
}

/// Where the next page starts.
enum Cursor {
    /// At the range's start.
    Start,
    /// At `key`, of whose rows `copies` were handed out already (a full-row
    /// view holds several copies of one row under one key, and a page may
    /// end among them).
    After { key: Key, copies: usize },
    /// The last page was short: nothing more.
    Done,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows").field("view", &self.view).field("page", &self.page).finish_non_exhaustive()
    }
}

impl Rows {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        view: ViewName,
        id: RelationId,
        schema: RelationSchema,
        range: KeyRange,
    ) -> Rows {
        Rows { store, view, id, schema, range, page: DEFAULT_PAGE, buffered: VecDeque::new(), cursor: Cursor::Start }
    }

    /// Reads `rows` rows per store scan (at least 1).
    pub fn page_size(mut self, rows: usize) -> Rows {
        self.page = rows.max(1);
        self
    }

    /// The columns, key and identity of the view's copy.
    pub fn schema(&self) -> &RelationSchema {
        &self.schema
    }

    /// The next row, or `None` after the last.
    pub async fn next(&mut self) -> Option<Result<Row, EngineError>> {
        if self.buffered.is_empty() {
            if let Err(e) = self.fill().await {
                self.cursor = Cursor::Done;
                return Some(Err(e));
            }
        }
        self.buffered.pop_front().map(Ok)
    }

    /// The next row read into `T` (by column name; see
    /// [`flashsync_core::typed`]), or `None` after the last.
    pub async fn next_as<T: DeserializeOwned>(&mut self) -> Option<Result<T, EngineError>> {
        let row = self.next().await?;
        Some(row.and_then(|row| typed::from_row(&self.schema, &row).map_err(EngineError::from)))
    }

    fn key_of(&self, row: &Row) -> Key {
        Key(self.schema.key.iter().filter_map(|&i| row.0.get(i).cloned()).collect())
    }

    async fn fill(&mut self) -> Result<(), EngineError> {
        let (start, skip_key, mut skip) = match &self.cursor {
            Cursor::Done => return Ok(()),
            Cursor::Start => (self.range.start.clone(), None, 0),
            Cursor::After { key, copies } => (Some(key.clone()), Some(key.clone()), *copies),
        };
        // Ask for the copies to skip on top of a page, so a page always
        // moves forward.
        let want = self.page.saturating_add(skip);
        let range = KeyRange { start, end: self.range.end.clone() };
        let rows = self.store.scan(self.id, &range, want).await.map_err(|e| match e.kind {
            flashsync_core::StoreErrorKind::NotFound => EngineError::NoCopy(self.view.clone()),
            _ => EngineError::Store(e),
        })?;
        let short = rows.len() < want;
        let mut last: Option<(Key, usize)> = None;
        for row in rows {
            let key = self.key_of(&row);
            if skip > 0 && skip_key.as_ref() == Some(&key) {
                skip -= 1;
                last = Some((key, 0));
                continue;
            }
            skip = 0;
            last = match last {
                Some((k, n)) if k == key => Some((k, n + 1)),
                _ => Some((key, 1)),
            };
            self.buffered.push_back(row);
        }
        // A page that was not short handed out at least one row: it held
        // more than the `skip` copies it started with.
        self.cursor = match last {
            Some((key, n)) if !short => {
                let before = match &self.cursor {
                    Cursor::After { key: prev, copies } if *prev == key => *copies,
                    _ => 0,
                };
                Cursor::After { key, copies: before + n }
            }
            _ => Cursor::Done,
        };
        Ok(())
    }
}
