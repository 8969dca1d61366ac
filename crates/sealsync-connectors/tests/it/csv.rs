use sealsync_connector::compliance::{self, Fidelity};
use sealsync_connector::{ConnectorError, Destination, Source};
use sealsync_connectors::csv::CsvFile;
use sealsync_contact::csv::{CsvLayout, CsvPreset};

#[tokio::test]
async fn csv_passes_the_compliance_suite() {
    for preset in [CsvPreset::Google, CsvPreset::Outlook] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.csv");
        compliance::run(
            || async { CsvFile::open(&path, CsvLayout::preset(preset)) },
            Fidelity::Basic,
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn csv_with_a_bad_row_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.csv");
    std::fs::write(
        &path,
        b"Name,E-mail 1 - Value\nAda,ada@example.org\nB\xffb,bob@example.org\n",
    )
    .unwrap();
    let c = CsvFile::open(&path, CsvLayout::preset(CsvPreset::Google)).unwrap();
    let err = c.list().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Invalid(_)), "{err}");
    assert!(!err.to_string().contains("example.org"), "{err}");
}

#[tokio::test]
async fn csv_is_not_overwritten_when_changed_during_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.csv");
    let c = CsvFile::open(&path, CsvLayout::preset(CsvPreset::Google)).unwrap();
    c.list().await.unwrap();
    c.create(&compliance::sample_contacts()[0]).await.unwrap();
    std::fs::write(&path, "Name\nsomeone else's edit\n").unwrap();
    assert!(c.flush().await.is_err());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "Name\nsomeone else's edit\n"
    );
}
