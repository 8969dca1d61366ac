use sealsync_connector::compliance::{self, Fidelity};
use sealsync_connector::{Destination, Source};
use sealsync_connectors::vdir::Vdir;
use sealsync_contact::VcardVersion;

#[tokio::test]
async fn vdir_passes_the_compliance_suite() {
    // New files unnamed until complete (`O_TMPFILE`) and updates swapped in, and the ways used
    // where the filesystem has neither (staged files, renames).
    for plain in [false, true] {
        for version in [VcardVersion::V4, VcardVersion::V3] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("book");
            let open = || async {
                Ok(Vdir::open(&path, version)?
                    .with_unnamed_files(!plain)
                    .with_swaps(!plain))
            };
            compliance::run(open, Fidelity::Full).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_large_vdir_is_listed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut names: Vec<String> = (0..9000).map(|i| format!("c{i}.vcf")).collect();
    for name in &names {
        std::fs::write(dir.path().join(name), name).unwrap();
    }
    std::fs::create_dir(dir.path().join("folder.vcf")).unwrap();
    let v = Vdir::open(dir.path(), VcardVersion::V4).unwrap();
    let mut listed: Vec<String> = v
        .list()
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    listed.sort();
    names.sort();
    assert_eq!(listed, names);
    // Listed behind other work (on a thread of lower priority), the same items with the same
    // etags.
    let mut now = v.list().await.unwrap().items;
    let mut behind = v.list_behind().await.unwrap().snapshot.items;
    now.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    behind.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    assert_eq!(behind, now);
}

#[tokio::test]
async fn vdir_ignores_hidden_and_foreign_files_and_reports_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".hidden.vcf"), "x").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    std::fs::write(dir.path().join("broken.vcf"), "BEGIN:VCARD\nFN;bad\n").unwrap();
    let v = Vdir::open(dir.path(), VcardVersion::V4).unwrap();
    let listed = v.list().await.unwrap().items;
    assert_eq!(listed.len(), 1);
    let got = v.fetch(&[listed[0].id.clone()]).await.unwrap();
    let err = got[0].1.as_ref().unwrap_err().to_string();
    assert!(err.contains("broken.vcf line"), "{err}");
}

#[tokio::test]
async fn vdir_create_never_replaces_a_file_with_the_same_uid() {
    for unnamed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let v = Vdir::open(dir.path(), VcardVersion::V4)
            .unwrap()
            .with_unnamed_files(unnamed);
        let c = &compliance::sample_contacts()[0];
        let a = v.create(c).await.unwrap();
        let b = v.create(c).await.unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(v.list().await.unwrap().items.len(), 2);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")),
            "{names:?}"
        );
        assert_eq!(staged(dir.path()), 0);
        // The etag a create answers is the one the listing shows.
        let listed = v.list().await.unwrap().items;
        for made in [&a, &b] {
            let seen = listed.iter().find(|m| m.id == made.id).unwrap();
            assert_eq!(seen.etag, made.etag);
        }
    }
}

// Written at once on several threads, contacts that share a UID still each get a file of
// their own, and every result is the file it names.
#[tokio::test]
async fn vdir_creates_many_at_once_without_losing_one() {
    for unnamed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let v = Vdir::open(dir.path(), VcardVersion::V4)
            .unwrap()
            .with_unnamed_files(unnamed);
        assert!(v.creates_at_once());
        let samples = compliance::sample_contacts();
        let contacts: Vec<_> = (0..40).map(|i| samples[i % 2].clone()).collect();
        let made = v.create_many(contacts.clone()).await;
        assert_eq!(made.len(), contacts.len());
        let made: Vec<_> = made.into_iter().map(Result::unwrap).collect();
        let ids: std::collections::HashSet<_> = made.iter().map(|m| m.id.clone()).collect();
        assert_eq!(
            ids.len(),
            contacts.len(),
            "two contacts were written to one file"
        );
        let listed = v.list().await.unwrap().items;
        assert_eq!(listed.len(), contacts.len());
        for (m, c) in made.iter().zip(&contacts) {
            let seen = listed.iter().find(|l| l.id == m.id).unwrap();
            assert_eq!(seen.etag, m.etag);
            let read = v.fetch(std::slice::from_ref(&m.id)).await.unwrap();
            let item = read[0].1.as_ref().unwrap();
            assert_eq!(item.contact.uid(), c.uid());
        }
        assert_eq!(staged(dir.path()), 0);
    }
}

#[tokio::test]
async fn updates_and_deletes_leave_no_old_version_behind() {
    for swaps in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let v = Vdir::open(dir.path(), VcardVersion::V4)
            .unwrap()
            .with_swaps(swaps);
        let with_note = |i: usize, note: &str| {
            let mut c = compliance::sample_contacts()[0].clone();
            c.set_text(
                "UID",
                Some(&format!("urn:uuid:00000000-0000-4000-8000-{i:012}")),
            );
            c.set_text("NOTE", Some(note));
            c
        };
        let mut made = Vec::new();
        for i in 0..20 {
            made.push(v.create(&with_note(i, "first version")).await.unwrap());
        }
        v.flush().await.unwrap();
        for (i, m) in made.iter().enumerate() {
            let now = v
                .update(&m.id, &m.etag, &with_note(i, "second version"))
                .await
                .unwrap();
            if i % 2 == 0 {
                v.delete(&now.id, &now.etag).await.unwrap();
            }
        }
        // The old versions are removed once the batch is flushed, not beside its writes.
        let staged = || staged(dir.path());
        let moved_aside = if swaps { 30 } else { 10 };
        assert_eq!(staged(), moved_aside, "swaps {swaps}");
        v.flush().await.unwrap();
        v.finish().await.unwrap();
        assert_eq!(staged(), 0, "swaps {swaps}");
        assert_eq!(v.list().await.unwrap().items.len(), 10);
        // Nothing in the folder, hidden or not, still holds an earlier version.
        let mut files = 0;
        for folder in [dir.path().to_owned(), dir.path().join(".sealsync-staging")] {
            for entry in std::fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    files += 1;
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(text.contains("second version"), "swaps {swaps}: {path:?}");
                }
            }
        }
        assert_eq!(files, 10, "swaps {swaps}");
    }
}

/// Files in the vdir's staging folder: written and not yet in place, or moved aside and not
/// yet removed.
fn staged(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(".sealsync-staging")).map_or(0, Iterator::count)
}

#[tokio::test]
async fn a_write_after_a_flush_waits_for_the_old_versions_to_go() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vdir::open(dir.path(), VcardVersion::V4).unwrap();
    let staged = || staged(dir.path());
    let mut made = Vec::new();
    for i in 0..201 {
        let mut c = compliance::sample_contacts()[0].clone();
        c.set_text(
            "UID",
            Some(&format!("urn:uuid:00000000-0000-4000-8000-{i:012}")),
        );
        made.push((v.create(&c).await.unwrap(), c));
    }
    let (last, mut contact) = made.pop().unwrap();
    for (m, _) in &made {
        v.delete(&m.id, &m.etag).await.unwrap();
    }
    assert_eq!(staged(), 200);
    // The next batch's first write starts once the removals the flush started are done: it
    // does not contend with them for the folder.
    v.flush().await.unwrap();
    contact.set_text("NOTE", Some("next batch"));
    v.update(&last.id, &last.etag, &contact).await.unwrap();
    assert!(staged() <= 1, "{} files still staged", staged());
    v.flush().await.unwrap();
    v.finish().await.unwrap();
    assert_eq!(staged(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_contact_carries_the_etag_of_the_file_it_was_read_from() {
    // One file replaced over and over while it is fetched: every fetch must answer the etag of
    // the version it read. An etag of a later version recorded with earlier contents would
    // make that later edit look synced already, and it would never be pulled.
    const VERSIONS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let v = Vdir::open(dir.path(), VcardVersion::V4).unwrap();
    let note = |n: usize| {
        let mut c = compliance::sample_contacts()[0].clone();
        c.set_text("NOTE", Some(&format!("version {n}")));
        c
    };
    let first = v.create(&note(0)).await.unwrap();
    let id = first.id.clone();
    let writer = {
        let (v, id) = (v.clone(), id.clone());
        tokio::spawn(async move {
            let mut written = std::collections::HashMap::from([(first.etag.clone(), 0)]);
            let mut etag = first.etag;
            for n in 1..VERSIONS {
                etag = v.update(&id, &etag, &note(n)).await.unwrap().etag;
                written.insert(etag.clone(), n);
            }
            written
        })
    };
    let mut seen = Vec::new();
    while !writer.is_finished() {
        let mut got = v.fetch(std::slice::from_ref(&id)).await.unwrap();
        let item = got.pop().unwrap().1.unwrap();
        let n: usize = item.contact.note().unwrap()["version ".len()..]
            .parse()
            .unwrap();
        seen.push((item.meta.etag, n));
    }
    let written = writer.await.unwrap();
    assert!(seen.len() > 100, "only {} fetches", seen.len());
    let wrong = seen
        .iter()
        .filter(|(e, n)| written.get(e) != Some(n))
        .count();
    assert_eq!(
        wrong,
        0,
        "{wrong} of {} fetches answered another version's etag",
        seen.len()
    );
}
