use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealsync_crypto::LocalKeyfile;
use sealsync_engine::{EndpointSpec, Engine, LinkDef, LinkSpec, RunError, RunOptions, RunReport};
use sealsync_store::{Hub, Store, StoreConfig, now_ms, testing};
use sealsync_types::WorkspaceName;

pub struct World {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
}

pub async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let config = testing::sqlite_config(dir.path());
    world_with(dir, config).await
}

pub async fn pg_world() -> Option<World> {
    let config = testing::postgres_config().await.unwrap()?;
    Some(world_with(tempfile::tempdir().unwrap(), config).await)
}

async fn world_with(dir: tempfile::TempDir, config: StoreConfig) -> World {
    let store = Store::open(&config).await.unwrap();
    let provider = Arc::new(LocalKeyfile::create(&dir.path().join("master.key")).unwrap());
    let hub = Hub::new(store, provider);
    let name = WorkspaceName::default_workspace();
    hub.ensure_workspace(&name).await.unwrap();
    let (_, keys) = hub.open_workspace(&name).await.unwrap();
    let engine = Engine::new(hub, Arc::new(keys), Some("DE".into()));
    World { dir, engine }
}

impl World {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Adds a vdir endpoint and a link to it.
    pub async fn vdir_link(&self, name: &str, spec: LinkSpec) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(&path).unwrap();
        self.engine
            .put_endpoint(
                name,
                &EndpointSpec::Vdir {
                    path: path.clone(),
                    version: None,
                },
                false,
            )
            .await
            .unwrap();
        self.engine
            .put_link(name, name, &spec, false)
            .await
            .unwrap();
        path
    }

    pub async fn def(&self, name: &str) -> LinkDef {
        self.engine
            .link_defs()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.name == name)
            .unwrap()
    }

    pub async fn try_sync(&self, name: &str, options: &RunOptions) -> Result<RunReport, RunError> {
        let def = self.def(name).await;
        self.engine.run(&def, options, &|_, _| {}).await
    }

    pub async fn sync(&self, name: &str) -> RunReport {
        self.try_sync(
            name,
            &RunOptions {
                batch: 3,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap()
    }

    /// The workspace's recorded runs, newest first.
    pub async fn runs(&self) -> Vec<sealsync_store::RunRow> {
        self.engine
            .hub()
            .store()
            .runs(self.engine.keys().workspace(), 100)
            .await
            .unwrap()
    }

    /// Live hub contacts: UID → (FN, NOTE, emails).
    pub async fn hub(&self) -> BTreeMap<String, Person> {
        let mut out = BTreeMap::new();
        let errors = self
            .engine
            .hub()
            .for_each_contact(self.engine.keys(), |_, c| {
                let p = Person::of(&c);
                assert!(
                    out.insert(p.uid.clone(), p).is_none(),
                    "two hub contacts with one UID"
                );
                Ok(())
            })
            .await
            .unwrap();
        assert!(errors.is_empty());
        out
    }
}

/// What the tests compare of a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub uid: String,
    pub name: String,
    pub note: String,
    pub emails: Vec<String>,
}

impl Person {
    pub fn of(c: &sealsync_contact::Contact) -> Self {
        let mut emails = c.emails();
        emails.sort();
        Person {
            uid: c.uid().unwrap_or_default(),
            name: c.formatted_name().unwrap_or_default(),
            note: c.note().unwrap_or_default(),
            emails,
        }
    }
}

pub fn card(uid: &str, name: &str, email: &str, note: &str) -> String {
    let mut s = format!("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:{uid}\r\nFN:{name}\r\nN:;{name};;;\r\n");
    if !email.is_empty() {
        s.push_str(&format!("EMAIL:{email}\r\n"));
    }
    if !note.is_empty() {
        s.push_str(&format!("NOTE:{note}\r\n"));
    }
    s.push_str("END:VCARD\r\n");
    s
}

/// Writes a card into a vdir (replacing the file by rename, as editors do).
pub fn put(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// Sets a file's modification time `secs` into the future (for "newest" conflicts).
pub fn touch_future(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// The contacts in a vdir: UID → person; panics on two files with one UID.
pub fn vdir(dir: &Path) -> BTreeMap<String, Person> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !name.ends_with(".vcf") {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        let (cards, _) = sealsync_contact::vcard::read_all(&bytes);
        let p = Person::of(&cards[0].contact);
        assert!(
            out.insert(p.uid.clone(), p).is_none(),
            "two files with one UID in {}",
            dir.display()
        );
    }
    out
}

/// The file holding the contact with this UID.
pub fn file_of(dir: &Path, uid: &str) -> PathBuf {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if !e.file_name().to_string_lossy().ends_with(".vcf") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        if text.contains(&format!("UID:{uid}\r\n")) {
            return e.path();
        }
    }
    panic!("no file for {uid}");
}

/// Deletes the live hub contact with this UID, as a delete in the hub does: a tombstone.
pub async fn hub_delete(w: &World, uid: &str) {
    let mut found = None;
    w.engine
        .hub()
        .for_each_contact(w.engine.keys(), |id, c| {
            if c.uid().as_deref() == Some(uid) {
                found = Some(id);
            }
            Ok(())
        })
        .await
        .unwrap();
    let Some(id) = found else { return };
    let store = w.engine.hub().store();
    let ws = w.engine.keys().workspace();
    let meta = store.hub_meta(ws).await.unwrap();
    let version = meta.iter().find(|m| m.id == id).unwrap().version;
    store
        .write_contacts(ws, &[Hub::tombstone(id, version + 1, now_ms() / 1000)])
        .await
        .unwrap();
}
