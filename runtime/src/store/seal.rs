//! Secrets at rest: AES-256-GCM (ring) envelopes for every secret-bearing value the store keeps.
//!
//! Two levels of keys:
//! - the **master key** lives outside the database (a keyring file, mode 0600, or an
//!   environment variable) and only wraps data keys;
//! - **data keys** seal the values. They are kept in the database, wrapped by the master key, so
//!   every replica sharing a PostgreSQL database shares them, and a rotation made on one replica
//!   reaches the others. The newest is the *primary*: new writes use it.
//!
//! A sealed value is `bbx:1:KEYID:` followed by the nonce, the ciphertext and the tag (base64 in
//! a text column, raw bytes in a blob column). Its associated data is the record's identity and
//! column, so a value copied to another row or column does not open. A value without the prefix
//! is clear text from before encryption (the store seals those on start).

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom as _, SystemRandom};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The start of every sealed value, before its key id.
const MAGIC: &str = "bbx:1:";
/// The length of a key id (`k` or `m` and 8 hex digits).
const KEY_ID_LEN: usize = 9;
/// The length of a sealed value's prefix `bbx:1:KEYID:`, the same for every key.
pub const PREFIX_LEN: usize = MAGIC.len() + KEY_ID_LEN + 1;
/// The AES-GCM tag's length.
const TAG_LEN: usize = 16;
/// What sealing adds to a blob value: prefix, nonce and tag.
pub const BLOB_OVERHEAD: usize = PREFIX_LEN + NONCE_LEN + TAG_LEN;
/// The environment variable that may hold the master key (base64 of 32 bytes).
pub const KEY_ENV: &str = "BROKERBOX_KEYRING_KEY";
/// The keyring file's name in the data dir.
pub const KEYRING_FILE: &str = "keyring.toml";

/// Why a value or a key could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The value names a data key this runtime does not hold (yet: another replica may have
    /// just made it).
    #[error("the value is sealed with key {0}, which this runtime does not hold")]
    UnknownKey(String),
    /// The value does not open with its key: it was altered, or moved from another record.
    #[error("a sealed value does not open with key {0}: it was altered or moved")]
    Tampered(String),
    /// The value is not a well-formed envelope.
    #[error("a sealed value is malformed")]
    Malformed,
}

/// The `bbx:1:KEYID:` prefix of values sealed with `key_id`.
pub fn prefix(key_id: &str) -> String {
    format!("{MAGIC}{key_id}:")
}

/// The key id a sealed value names, or `None` for clear text.
pub fn key_of(value: &[u8]) -> Option<&str> {
    let rest = value.strip_prefix(MAGIC.as_bytes())?;
    let id = rest.get(..KEY_ID_LEN)?;
    (rest.get(KEY_ID_LEN) == Some(&b':'))
        .then(|| std::str::from_utf8(id).ok())
        .flatten()
}

/// A fresh key id: `letter` and 8 random hex digits.
fn new_id(letter: char) -> String {
    let mut bytes = [0u8; 4];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    format!("{letter}{}", hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One AES-256-GCM key and its id.
struct Key {
    id: String,
    key: LessSafeKey,
}

impl Key {
    fn new(id: String, bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::Malformed)?;
        Ok(Key {
            id,
            key: LessSafeKey::new(unbound),
        })
    }

    /// `bbx:1:ID:` ‖ nonce ‖ ciphertext ‖ tag.
    fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut sealed = Vec::with_capacity(BLOB_OVERHEAD + plain.len());
        sealed.extend_from_slice(prefix(&self.id).as_bytes());
        sealed.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("AES-GCM seals any value the store holds");
        sealed.extend_from_slice(&body);
        sealed
    }

    /// The plain value of `body` (nonce ‖ ciphertext ‖ tag).
    fn open(&self, aad: &[u8], body: &[u8]) -> Result<Vec<u8>, SealError> {
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut sealed)
            .map_err(|_| SealError::Tampered(self.id.clone()))?;
        Ok(plain.to_vec())
    }
}

/// The master key: wraps the data keys. Its id is derived from the key itself, so a database
/// can say which master key it needs without holding it.
pub struct MasterKey {
    key: Key,
    /// Where it came from, for error messages.
    pub origin: String,
}

impl MasterKey {
    /// A new random master key and its base64 text.
    pub fn generate(origin: &str) -> (Self, String) {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random source works");
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let key = Self::from_bytes(&bytes, origin).expect("32 bytes make an AES-256 key");
        (key, text)
    }

    /// The master key of base64 text `text` (32 bytes).
    ///
    /// # Errors
    /// When the text is not base64 of 32 bytes.
    pub fn from_base64(text: &str, origin: &str) -> anyhow::Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| anyhow::anyhow!("{origin}: the key is not base64: {e}"))?;
        if bytes.len() != 32 {
            anyhow::bail!(
                "{origin}: the key is {} bytes; an AES-256 key is 32",
                bytes.len()
            );
        }
        Self::from_bytes(&bytes, origin)
    }

    fn from_bytes(bytes: &[u8], origin: &str) -> anyhow::Result<Self> {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let id = format!("m{}", hex(&digest.as_ref()[..4]));
        Ok(MasterKey {
            key: Key::new(id, bytes).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?,
            origin: origin.to_string(),
        })
    }

    /// The master key's id (`m` and 8 hex digits of its SHA-256).
    pub fn id(&self) -> &str {
        &self.key.id
    }

    /// A random key for a store nothing else opens (a check's scratch store, tests).
    pub fn ephemeral() -> Self {
        Self::generate("an ephemeral key").0
    }
}

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A keyring file, created (mode 0600) when missing and the database holds no keys yet.
    File(PathBuf),
    /// Base64 of the key, from an environment variable.
    Env(String),
}

impl KeySource {
    /// `--keyring FILE` if given, else [`KEY_ENV`] if set, else `DATA_DIR/keyring.toml`.
    pub fn resolve(keyring: Option<&Path>, data_dir: &Path) -> Self {
        if let Some(file) = keyring {
            return KeySource::File(file.to_path_buf());
        }
        match std::env::var(KEY_ENV) {
            Ok(key) if !key.trim().is_empty() => KeySource::Env(key),
            _ => KeySource::File(data_dir.join(KEYRING_FILE)),
        }
    }

    /// The master key, and whether it was just made (a new keyring file).
    ///
    /// # Errors
    /// When the file or variable does not hold a valid key, or a new file cannot be written.
    pub fn load(&self, may_create: bool) -> anyhow::Result<(MasterKey, bool)> {
        match self {
            KeySource::Env(text) => Ok((MasterKey::from_base64(text, KEY_ENV)?, false)),
            KeySource::File(path) => {
                let origin = format!("keyring {}", path.display());
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        let file: KeyringFile = toml::from_str(&text)
                            .map_err(|e| anyhow::anyhow!("{origin} is not a keyring: {e}"))?;
                        Ok((MasterKey::from_base64(&file.key, &origin)?, false))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => {
                        let (key, text) = MasterKey::generate(&origin);
                        write_keyring(path, &text)?;
                        Ok((key, true))
                    }
                    Err(e) => Err(anyhow::anyhow!("cannot read {origin}: {e}")),
                }
            }
        }
    }

    /// What this source is, for messages.
    pub fn describe(&self) -> String {
        match self {
            KeySource::File(path) => format!("keyring {}", path.display()),
            KeySource::Env(_) => KEY_ENV.to_string(),
        }
    }
}

/// The keyring file's content.
#[derive(serde::Deserialize)]
struct KeyringFile {
    /// Base64 of the 32-byte master key.
    key: String,
}

/// Writes a new keyring file readable by its owner only.
fn write_keyring(path: &Path, key: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let text = format!(
        "# brokerbox keyring: the master key that opens this runtime's stored secrets.\n\
         # Keep it secret and backed up: without it the state store's credentials and\n\
         # parameters cannot be read.\n\
         key = \"{key}\"\n"
    );
    // Written whole to a temporary file, then linked in place (never over an existing keyring)
    // and the directory synced: the key is on disk before any data key is wrapped with it.
    let cannot =
        |e: std::io::Error| anyhow::anyhow!("cannot create keyring {}: {e}", path.display());
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(cannot)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(cannot)?;
    Ok(())
}

/// A data key as the database keeps it.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Its id (`k` and 8 hex digits).
    pub id: String,
    /// The master key id it is wrapped with.
    pub master: String,
    /// The key, sealed with the master key (text envelope).
    pub wrapped: String,
    /// When it was made (ms); the newest is the primary.
    pub created_at: i64,
}

/// The data keys this runtime holds, and which is primary.
struct DataKeys {
    by_id: BTreeMap<String, Arc<Key>>,
    primary: Arc<Key>,
}

/// Seals and opens values with the data keys, which it unwraps with the master key.
pub struct Sealer {
    master: MasterKey,
    keys: RwLock<Option<DataKeys>>,
}

/// The associated data of a value: its table, its row's key columns and its column.
pub fn aad(table: &str, ids: &[&str], column: &str) -> Vec<u8> {
    let mut aad = table.as_bytes().to_vec();
    for id in ids {
        aad.push(0);
        aad.extend_from_slice(id.as_bytes());
    }
    aad.push(0);
    aad.extend_from_slice(column.as_bytes());
    aad
}

impl Sealer {
    /// A sealer with `master` and no data keys yet (see [`Sealer::install`]).
    pub fn new(master: MasterKey) -> Self {
        Sealer {
            master,
            keys: RwLock::new(None),
        }
    }

    /// The master key's id.
    pub fn master_id(&self) -> &str {
        self.master.id()
    }

    /// Where the master key came from.
    pub fn master_origin(&self) -> &str {
        &self.master.origin
    }

    /// A new data key, wrapped for the database.
    pub fn new_data_key(&self, now: i64) -> StoredKey {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random source works");
        let id = new_id('k');
        let wrapped = self
            .master
            .key
            .seal(&aad("data_keys", &[&id], "key"), &bytes);
        StoredKey {
            master: self.master.id().to_string(),
            wrapped: base64_text(&wrapped),
            id,
            created_at: now,
        }
    }

    /// Unwraps `stored` (every data key of the database) and makes the newest primary.
    ///
    /// # Errors
    /// When a key is wrapped with another master key or does not unwrap: the message says
    /// which master key the database needs.
    pub fn install(&self, stored: &[StoredKey]) -> anyhow::Result<()> {
        let mut by_id = BTreeMap::new();
        for key in stored {
            let refused = || {
                anyhow::anyhow!(
                    "the master key in {} ({}) does not open this database's data key {} \
                     (wrapped with master key {}): start with the keyring this database was \
                     used with; nothing was written",
                    self.master.origin,
                    self.master.id(),
                    key.id,
                    key.master
                )
            };
            if key.master != self.master.id() {
                return Err(refused());
            }
            let body = text_body(&key.wrapped).map_err(|_| refused())?;
            let bytes = self
                .master
                .key
                .open(&aad("data_keys", &[&key.id], "key"), &body)
                .map_err(|_| refused())?;
            let key = Key::new(key.id.clone(), &bytes).map_err(|_| refused())?;
            by_id.insert(key.id.clone(), Arc::new(key));
        }
        let newest = (stored.iter())
            .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            .ok_or_else(|| anyhow::anyhow!("the database holds no data key"))?;
        let primary = by_id[&newest.id].clone();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(DataKeys { by_id, primary });
        Ok(())
    }

    /// The primary data key's id.
    pub fn primary_id(&self) -> String {
        self.with_keys(|keys| keys.primary.id.clone())
    }

    /// The ids of the data keys held.
    pub fn key_ids(&self) -> Vec<String> {
        self.with_keys(|keys| keys.by_id.keys().cloned().collect())
    }

    fn with_keys<T>(&self, f: impl FnOnce(&DataKeys) -> T) -> T {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        f(keys
            .as_ref()
            .expect("data keys are installed when the store opens"))
    }

    /// `plain` sealed with the primary key, as bytes.
    pub fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let primary = self.with_keys(|keys| keys.primary.clone());
        primary.seal(aad, plain)
    }

    /// `plain` sealed with the primary key, as text.
    pub fn seal_text(&self, aad: &[u8], plain: &str) -> String {
        base64_text(&self.seal_bytes(aad, plain.as_bytes()))
    }

    /// The plain bytes of a blob value (clear text passes as it is).
    ///
    /// # Errors
    /// See [`SealError`].
    pub fn open_bytes(&self, aad: &[u8], value: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(id) = key_of(value) else {
            return Ok(value.to_vec());
        };
        let key = self.key(id)?;
        key.open(aad, &value[PREFIX_LEN..])
    }

    /// The plain text of a text value (clear text passes as it is).
    ///
    /// # Errors
    /// See [`SealError`].
    pub fn open_text(&self, aad: &[u8], value: &str) -> Result<String, SealError> {
        let Some(id) = key_of(value.as_bytes()) else {
            return Ok(value.to_string());
        };
        let key = self.key(id)?;
        let plain = key.open(aad, &text_body(value)?)?;
        String::from_utf8(plain).map_err(|_| SealError::Malformed)
    }

    /// `plain` sealed with the master key (for files the runtime keeps outside the database,
    /// which no data key rotation touches).
    pub fn seal_with_master(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        self.master.key.seal(aad, plain)
    }

    /// The plain bytes of a value sealed with [`Sealer::seal_with_master`] (clear bytes pass).
    ///
    /// # Errors
    /// When it is sealed with another master key, or altered.
    pub fn open_with_master(&self, aad: &[u8], value: Vec<u8>) -> Result<Vec<u8>, SealError> {
        match key_of(&value) {
            None => Ok(value),
            Some(id) if id == self.master.id() => self.master.key.open(aad, &value[PREFIX_LEN..]),
            Some(id) => Err(SealError::UnknownKey(id.to_string())),
        }
    }

    fn key(&self, id: &str) -> Result<Arc<Key>, SealError> {
        self.with_keys(|keys| keys.by_id.get(id).cloned())
            .ok_or_else(|| SealError::UnknownKey(id.to_string()))
    }
}

/// A sealed value's text form: its prefix, then base64 of nonce ‖ ciphertext ‖ tag.
fn base64_text(sealed: &[u8]) -> String {
    let (prefix, body) = sealed.split_at(PREFIX_LEN);
    let mut text = String::from_utf8(prefix.to_vec()).expect("the prefix is ASCII");
    base64::engine::general_purpose::STANDARD_NO_PAD.encode_string(body, &mut text);
    text
}

/// Nonce ‖ ciphertext ‖ tag of a text value.
fn text_body(value: &str) -> Result<Vec<u8>, SealError> {
    let body = value.get(PREFIX_LEN..).ok_or(SealError::Malformed)?;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(body)
        .map_err(|_| SealError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> (Sealer, StoredKey) {
        let sealer = Sealer::new(MasterKey::ephemeral());
        let key = sealer.new_data_key(1);
        sealer.install(std::slice::from_ref(&key)).unwrap();
        (sealer, key)
    }

    #[test]
    fn values_open_only_in_their_own_record_and_column() {
        let (sealer, key) = sealer();
        let here = aad("instances", &["b", "i1"], "parameters");
        let sealed = sealer.seal_text(&here, "{\"password\":\"hunter2\"}");
        assert!(sealed.starts_with(&prefix(&key.id)));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(key_of(sealed.as_bytes()), Some(key.id.as_str()));
        assert_eq!(
            sealer.open_text(&here, &sealed).unwrap(),
            "{\"password\":\"hunter2\"}"
        );
        for elsewhere in [
            aad("instances", &["b", "i2"], "parameters"),
            aad("instances", &["b", "i1"], "context"),
        ] {
            assert!(matches!(
                sealer.open_text(&elsewhere, &sealed),
                Err(SealError::Tampered(_))
            ));
        }
        let blob = sealer.seal_bytes(&here, b"v");
        assert_eq!(blob.len(), 1 + BLOB_OVERHEAD);
        assert_eq!(sealer.open_bytes(&here, &blob).unwrap(), b"v");
        // Clear text from before encryption passes.
        assert_eq!(sealer.open_text(&here, "{}").unwrap(), "{}");
    }

    #[test]
    fn another_master_key_refuses_the_data_keys_and_says_which_it_needs() {
        let (sealer, key) = sealer();
        let other = Sealer::new(MasterKey::ephemeral());
        let error = other.install(&[key]).unwrap_err().to_string();
        assert!(error.contains(sealer.master_id()), "{error}");
        // Even under the right id, a wrapped key that was altered does not unwrap.
        let mut forged = sealer.new_data_key(2);
        forged
            .wrapped
            .replace_range(PREFIX_LEN..PREFIX_LEN + 4, "AAAA");
        assert!(sealer.install(&[forged]).is_err());
    }

    #[test]
    fn the_newest_key_is_primary_and_old_values_still_open() {
        let (sealer, first) = sealer();
        let here = aad("kv", &["b", "k"], "value");
        let old = sealer.seal_text(&here, "x");
        let second = sealer.new_data_key(2);
        sealer.install(&[first, second.clone()]).unwrap();
        assert_eq!(sealer.primary_id(), second.id);
        assert_eq!(sealer.open_text(&here, &old).unwrap(), "x");
        assert!(sealer
            .seal_text(&here, "x")
            .starts_with(&prefix(&second.id)));
    }
}
