//! The compliance suite every connector passes: one contract, checked the same way for all.
//!
//! [`run`] takes a function that opens the *same*, initially empty collection each time it is
//! called (so it can check that writes survive a new instance) and returns the first broken
//! promise as an error message.

use std::future::Future;

use sealsync_contact::{Contact, Email, Property};

use crate::{Connector, ConnectorError, ItemMeta, RemoteId};

/// How much of a contact the collection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    /// Every property survives (vCard stores).
    Full,
    /// Name, emails, phones and note survive (CSV, SQL columns).
    Basic,
}

/// Contacts the suite writes: plain, Unicode, and characters that need escaping in every format.
pub fn sample_contacts() -> Vec<Contact> {
    let mk = |uid: &str, given: &str, family: &str, email: &str, tel: &str, note: &str| {
        let mut c = Contact::new();
        c.push(Property::text("UID", uid));
        c.push(Property::text("FN", &format!("{given} {family}")));
        c.push(Property::compound("N", &[family, given, "", "", ""]));
        c.push(Property::text("EMAIL", email).with_param("TYPE", "work"));
        c.push(Property::text("TEL", tel).with_param("TYPE", "cell"));
        if !note.is_empty() {
            c.push(Property::text("NOTE", note));
        }
        c
    };
    vec![
        mk(
            "compliance-1",
            "Ada",
            "Lovelace",
            "ada@example.org",
            "+44 20 7946 0001",
            "first",
        ),
        mk(
            "compliance-2",
            "Zoë",
            "Ørsted-Ñúñez",
            "zoe@example.org",
            "+49 30 1234567",
            "semi; colon, comma \\ backslash \"quote\" ☃",
        ),
        mk(
            "compliance-3",
            "Grace",
            "Hopper",
            "grace@example.org",
            "+1 202 555 0143",
            "",
        ),
    ]
}

/// What the suite compares: the parts every connector keeps.
fn essence(c: &Contact, fidelity: Fidelity) -> Vec<String> {
    let mut v = vec![
        format!("FN={}", c.formatted_name().unwrap_or_default()),
        format!("NOTE={}", c.note().unwrap_or_default()),
    ];
    let mut emails: Vec<String> = c
        .emails()
        .iter()
        .filter_map(|e| Email::parse(e).map(|e| e.as_str().to_owned()))
        .collect();
    emails.sort();
    v.push(format!("EMAIL={emails:?}"));
    let mut phones: Vec<String> = c
        .phones()
        .iter()
        .map(|p| {
            p.chars()
                .filter(|ch| ch.is_ascii_digit() || *ch == '+')
                .collect()
        })
        .collect();
    phones.sort();
    v.push(format!("TEL={phones:?}"));
    if fidelity == Fidelity::Full {
        v.push(format!(
            "HASH={}",
            sealsync_contact::ContentHash::of(c).to_hex()
        ));
    }
    v
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

/// Lists in full, and again from the cursor the suite's previous listing gave (`cursor`, carried
/// across calls and instances): both must give the same items. A cursor that is not one must be
/// ignored, never trusted.
async fn listing<C: Connector>(
    c: &C,
    cursor: &mut Option<Vec<u8>>,
) -> Result<Vec<ItemMeta>, String> {
    let sorted = |mut items: Vec<ItemMeta>| {
        items.sort_by(|a, b| a.id.cmp(&b.id));
        items
    };
    let full = list(c).await?;
    let from = c
        .list_from(cursor.as_deref())
        .await
        .map_err(|e| format!("list from a cursor failed: {e}"))?;
    check(
        sorted(from.snapshot.items) == full,
        "a listing from an earlier cursor must list what a full listing does",
    )?;
    if from.cursor.is_some() {
        let bogus = c
            .list_from(Some(b"not a cursor"))
            .await
            .map_err(|e| format!("list from an unusable cursor failed: {e}"))?;
        check(
            sorted(bogus.snapshot.items) == full,
            "a cursor that is not one must be ignored for a full listing",
        )?;
    }
    *cursor = from.cursor;
    Ok(full)
}

async fn fetch_one<C: Connector>(
    c: &C,
    id: &RemoteId,
) -> Result<Result<Contact, ConnectorError>, String> {
    Ok(fetch(c, id).await?.map(|i| i.contact))
}

/// Runs the whole suite. `open` must open the same collection every time, empty at first.
pub async fn run<C, F, Fut>(open: F, fidelity: Fidelity) -> Result<(), String>
where
    C: Connector,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<C, ConnectorError>>,
{
    let c = open().await.map_err(|e| format!("open failed: {e}"))?;
    let mut cursor = None;
    check(
        listing(&c, &mut cursor).await?.is_empty(),
        "a new collection must list no items",
    )?;

    // Create: every item listed once, with distinct ids, contents as written.
    let samples = sample_contacts();
    let mut created = Vec::new();
    for s in &samples {
        let meta = c
            .create(s)
            .await
            .map_err(|e| format!("create failed: {e}"))?;
        created.push(meta);
    }
    c.flush().await.map_err(|e| format!("flush failed: {e}"))?;
    let listed = listing(&c, &mut cursor).await?;
    check(
        listed.len() == samples.len(),
        "every created item must be listed",
    )?;
    for (meta, sample) in created.iter().zip(&samples) {
        let l = listed
            .iter()
            .find(|l| l.id == meta.id)
            .ok_or("a created item's id is not in the listing")?;
        check(
            l.etag == meta.etag,
            "the etag create returned must be the listed etag",
        )?;
        let got = fetch_one(&c, &meta.id)
            .await?
            .map_err(|e| format!("fetch of a created item failed: {e}"))?;
        check(
            essence(&got, fidelity) == essence(sample, fidelity),
            "a fetched item must hold what was written",
        )?;
    }
    let again = listing(&c, &mut cursor).await?;
    check(
        again == listed,
        "listing twice with no change must give the same ids and etags",
    )?;

    // Writes survive a new instance.
    let reopened = open().await.map_err(|e| format!("reopen failed: {e}"))?;
    check(
        listing(&reopened, &mut cursor).await? == listed,
        "a new instance must list what was written",
    )?;
    drop(reopened);

    // Update with the current etag: new contents, new etag.
    let target = &created[0];
    let mut changed = samples[0].clone();
    changed.set_text("NOTE", Some("changed by the compliance suite"));
    let updated = c
        .update(&target.id, &target.etag, &changed)
        .await
        .map_err(|e| format!("update failed: {e}"))?;
    c.flush().await.map_err(|e| format!("flush failed: {e}"))?;
    check(
        updated.etag != target.etag,
        "an update must change the etag",
    )?;
    let got = fetch_one(&c, &updated.id)
        .await?
        .map_err(|e| format!("fetch after update failed: {e}"))?;
    check(
        essence(&got, fidelity) == essence(&changed, fidelity),
        "an update must be read back",
    )?;
    let listed = listing(&c, &mut cursor).await?;
    check(
        listed
            .iter()
            .any(|l| l.id == updated.id && l.etag == updated.etag),
        "the listing must show the etag update returned",
    )?;

    // Update and delete with a stale etag: conflict, nothing changed.
    let stale = c.update(&updated.id, &target.etag, &samples[0]).await;
    check(
        stale == Err(ConnectorError::Conflict),
        "an update with a stale etag must be a conflict",
    )?;
    let stale = c.delete(&updated.id, &target.etag).await;
    check(
        stale == Err(ConnectorError::Conflict),
        "a delete with a stale etag must be a conflict",
    )?;
    c.flush().await.map_err(|e| format!("flush failed: {e}"))?;
    let got = fetch_one(&c, &updated.id)
        .await?
        .map_err(|e| format!("fetch after a refused write failed: {e}"))?;
    check(
        essence(&got, fidelity) == essence(&changed, fidelity),
        "a refused write must change nothing",
    )?;

    // Delete with the current etag: gone; deleting again is fine; fetching it says NotFound.
    c.delete(&updated.id, &updated.etag)
        .await
        .map_err(|e| format!("delete failed: {e}"))?;
    c.flush().await.map_err(|e| format!("flush failed: {e}"))?;
    let listed = listing(&c, &mut cursor).await?;
    check(
        listed.len() == samples.len() - 1,
        "a deleted item must leave the listing",
    )?;
    check(
        !listed.iter().any(|l| l.id == updated.id),
        "a deleted item must not be listed",
    )?;
    c.delete(&updated.id, &updated.etag)
        .await
        .map_err(|e| format!("deleting an item already gone must succeed: {e}"))?;
    let gone = fetch_one(&c, &updated.id).await?;
    check(
        gone.err() == Some(ConnectorError::NotFound),
        "fetching a deleted item must say NotFound",
    )?;

    // The others are untouched.
    for (meta, sample) in created.iter().zip(&samples).skip(1) {
        let got = fetch_one(&c, &meta.id)
            .await?
            .map_err(|e| format!("fetch failed: {e}"))?;
        check(
            essence(&got, fidelity) == essence(sample, fidelity),
            "other items must be untouched",
        )?;
    }
    let reopened = open().await.map_err(|e| format!("reopen failed: {e}"))?;
    check(
        listing(&reopened, &mut cursor).await? == listed,
        "a new instance must see the deletes and updates",
    )?;
    Ok(())
}

/// How a collection that is only read (a webhook source) is changed: from outside, by the system
/// that sends to it, under the sender's own item keys.
#[async_trait::async_trait]
pub trait Feeder: Send + Sync {
    /// Adds or replaces the item `key`.
    async fn put(&self, key: &str, contact: &Contact) -> Result<(), String>;
    /// Removes the item `key`.
    async fn remove(&self, key: &str) -> Result<(), String>;
}

/// The ids listed now that were not in `before`.
fn added(before: &[ItemMeta], now: &[ItemMeta]) -> Vec<ItemMeta> {
    now.iter()
        .filter(|n| !before.iter().any(|b| b.id == n.id))
        .cloned()
        .collect()
}

async fn list<S: crate::Source>(s: &S) -> Result<Vec<ItemMeta>, String> {
    let mut items = s
        .list()
        .await
        .map_err(|e| format!("list failed: {e}"))?
        .items;
    items.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(items)
}

async fn fetch<S: crate::Source>(
    s: &S,
    id: &RemoteId,
) -> Result<Result<crate::Item, ConnectorError>, String> {
    let got = s
        .fetch(std::slice::from_ref(id))
        .await
        .map_err(|e| format!("fetch failed as a whole: {e}"))?;
    check(
        got.len() == 1,
        "fetch of one id must answer for exactly that id",
    )?;
    let (gid, item) = got.into_iter().next().ok_or("fetch answered nothing")?;
    check(&gid == id, "fetch answered for another id")?;
    Ok(item)
}

/// The suite for a collection that is only read: what `feeder` sends shows in the listing and
/// the contents, once each; an item sent again with other contents moves its etag; a removed
/// item leaves the listing. `open` must open the same collection every time, empty at first.
pub async fn run_source<S, F, Fut>(
    open: F,
    feeder: &dyn Feeder,
    fidelity: Fidelity,
) -> Result<(), String>
where
    S: crate::Source,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S, ConnectorError>>,
{
    let s = open().await.map_err(|e| format!("open failed: {e}"))?;
    check(
        list(&s).await?.is_empty(),
        "a new collection must list no items",
    )?;

    // Each item sent appears once, as sent.
    let samples = sample_contacts();
    let mut ids = Vec::new();
    let mut listed = Vec::new();
    for (i, c) in samples.iter().enumerate() {
        feeder.put(&format!("item-{i}"), c).await?;
        let now = list(&s).await?;
        let new = added(&listed, &now);
        check(
            new.len() == 1,
            "an item sent must add exactly one listed item",
        )?;
        let item = fetch(&s, &new[0].id)
            .await?
            .map_err(|e| format!("fetch of a sent item failed: {e}"))?;
        check(
            item.meta.etag == new[0].etag,
            "fetch must give the listed etag",
        )?;
        check(
            essence(&item.contact, fidelity) == essence(c, fidelity),
            "a fetched item must hold what was sent",
        )?;
        ids.push(new[0].id.clone());
        listed = now;
    }
    check(
        list(&s).await? == listed,
        "listing twice with no change must agree",
    )?;

    // The same item sent again as it was: nothing moves. With other contents: its etag moves.
    feeder.put("item-0", &samples[0]).await?;
    check(
        list(&s).await? == listed,
        "an item sent again unchanged must not move",
    )?;
    let mut changed = samples[0].clone();
    changed.set_text("NOTE", Some("changed by the sender"));
    feeder.put("item-0", &changed).await?;
    let now = list(&s).await?;
    check(
        now.len() == listed.len(),
        "an item sent again must not add an item",
    )?;
    let moved: Vec<&ItemMeta> = now.iter().filter(|n| !listed.contains(n)).collect();
    check(
        moved.len() == 1 && moved[0].id == ids[0],
        "an item sent with other contents must move its own etag only",
    )?;
    let got = fetch(&s, &ids[0])
        .await?
        .map_err(|e| format!("fetch after a change failed: {e}"))?;
    check(
        essence(&got.contact, fidelity) == essence(&changed, fidelity),
        "a changed item must be read back",
    )?;

    // Removed: gone from the listing, NotFound on fetch; the others untouched.
    feeder.remove("item-1").await?;
    let after = list(&s).await?;
    check(
        after.len() == samples.len() - 1 && !after.iter().any(|a| a.id == ids[1]),
        "a removed item must leave the listing",
    )?;
    check(
        fetch(&s, &ids[1]).await?.err() == Some(ConnectorError::NotFound),
        "fetching a removed item must say NotFound",
    )?;
    let got = fetch(&s, &ids[2])
        .await?
        .map_err(|e| format!("fetch failed: {e}"))?;
    check(
        essence(&got.contact, fidelity) == essence(&samples[2], fidelity),
        "other items must be untouched",
    )?;
    let unknown = RemoteId::parse("no-such-item").map_err(|e| e.to_string())?;
    check(
        fetch(&s, &unknown).await?.err() == Some(ConnectorError::NotFound),
        "fetching an unknown id must say NotFound",
    )?;
    let reopened = open().await.map_err(|e| format!("reopen failed: {e}"))?;
    check(
        list(&reopened).await? == after,
        "a new instance must list the same items",
    )?;
    Ok(())
}
