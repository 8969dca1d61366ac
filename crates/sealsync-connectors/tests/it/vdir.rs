use sealsync_connector::compliance::{self, Fidelity};
use sealsync_connector::{Destination, Source};
use sealsync_connectors::vdir::Vdir;
use sealsync_contact::VcardVersion;

#[tokio::test]
async fn vdir_passes_the_compliance_suite() {
    for version in [VcardVersion::V4, VcardVersion::V3] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book");
        compliance::run(|| async { Vdir::open(&path, version) }, Fidelity::Full)
            .await
            .unwrap();
    }
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
    let dir = tempfile::tempdir().unwrap();
    let v = Vdir::open(dir.path(), VcardVersion::V4).unwrap();
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
    let staged = std::fs::read_dir(dir.path().join(".sealsync-staging"))
        .unwrap()
        .count();
    assert_eq!(staged, 0);
}
