//! Send tokens: what a message's page and click links carry instead of a bare outbox id, so
//! nobody can count a click for a send they did not receive. A token is `ID.MAC`: the send's id
//! and the first 16 bytes of HMAC-SHA256 over it (base64url), keyed by the store's link secret.
//!
//! The secret comes from `NUDGE_LINK_SECRET` when set, else from `<data_dir>/link-secret`, made
//! at random the first time a store is opened (every process sharing the data folder reads the
//! same file). `NUDGE_LINK_SECRET_PREVIOUS` is also accepted during a rotation, so links already
//! sent keep working.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, Result};

/// The environment variable holding the link secret (32 characters at least).
pub const SECRET_ENV: &str = "NUDGE_LINK_SECRET";
/// The previous link secret, still accepted while links signed with it are out.
pub const PREVIOUS_SECRET_ENV: &str = "NUDGE_LINK_SECRET_PREVIOUS";
/// The file in the data folder holding a generated secret.
pub const SECRET_FILE: &str = "link-secret";

/// A token of the longest usual shape, to check a page template's length and characters
/// before the send's id is known.
pub const SAMPLE_TOKEN: &str = "1000000000.AAAAAAAAAAAAAAAAAAAAAA";

/// Bytes of the MAC kept in a token (128 bits).
const MAC_BYTES: usize = 16;
/// What the MAC covers besides the id, so a token is never valid for another use of the key.
const PURPOSE: &[u8] = b"nudge send token v1:";

/// Signs and checks send tokens; never printed.
#[derive(Clone)]
pub struct Links {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Links { .. }")
    }
}

impl Links {
    /// The secrets from the environment, or the data folder's secret file (made if missing).
    pub fn load(data_dir: &Path) -> Result<Links> {
        let from_env = |name: &str| -> Result<Option<Vec<u8>>> {
            match std::env::var(name) {
                Ok(value) => {
                    let value = value.trim();
                    if value.len() < 32 {
                        return Err(Error::Config {
                            path: name.into(),
                            message: "the link secret must be at least 32 characters: use a long random value (e.g. `openssl rand -hex 32`)".into(),
                        });
                    }
                    Ok(Some(value.as_bytes().to_vec()))
                }
                Err(_) => Ok(None),
            }
        };
        let previous = from_env(PREVIOUS_SECRET_ENV)?;
        let current = match from_env(SECRET_ENV)? {
            Some(secret) => secret,
            None => secret_file(data_dir)?,
        };
        Ok(Links { current, previous })
    }

    /// Links keyed by `secret` alone (tests).
    pub fn with_secret(secret: &[u8]) -> Links {
        Links {
            current: secret.to_vec(),
            previous: None,
        }
    }

    /// The token of send `id`.
    pub fn sign(&self, id: i64) -> String {
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(mac(&self.current, id)))
    }

    /// The send a token names, if it was signed with the current or the previous secret.
    /// Anything else (a bare id, a token of another store, an altered one) is `None`.
    pub fn verify(&self, token: &str) -> Option<i64> {
        let (id, signature) = token.split_once('.')?;
        if id.is_empty() || id.len() > 19 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let id: i64 = id.parse().ok()?;
        if id.to_string().len() != token.len() - signature.len() - 1 {
            return None; // leading zeros: one send has one token
        }
        let given = URL_SAFE_NO_PAD.decode(signature).ok()?;
        if given.len() != MAC_BYTES {
            return None;
        }
        let matches = |secret: &Vec<u8>| constant_time_eq(&mac(secret, id), &given);
        (matches(&self.current) || self.previous.as_ref().is_some_and(matches)).then_some(id)
    }
}

impl Links {
    /// A MAC of `data` for `purpose` (base64url, 16 bytes): what the console signs its session
    /// cookies and form tokens with. A tag made for one purpose never checks for another.
    pub fn tag(&self, purpose: &str, data: &str) -> String {
        URL_SAFE_NO_PAD.encode(tag(&self.current, purpose, data))
    }

    /// Whether `given` is the tag of `data` for `purpose` under the current or the previous
    /// secret.
    pub fn check_tag(&self, purpose: &str, data: &str, given: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(given) else {
            return false;
        };
        let matches = |secret: &Vec<u8>| constant_time_eq(&tag(secret, purpose, data), &given);
        matches(&self.current) || self.previous.as_ref().is_some_and(matches)
    }
}

fn tag(secret: &[u8], purpose: &str, data: &str) -> [u8; MAC_BYTES] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    // Length-prefixed, so no (purpose, data) pair reads as another, nor as a send token.
    mac.update(b"nudge tag v1:");
    mac.update(&(purpose.len() as u64).to_be_bytes());
    mac.update(purpose.as_bytes());
    mac.update(data.as_bytes());
    let full = mac.finalize().into_bytes();
    full[..MAC_BYTES].try_into().expect("a prefix of 32 bytes")
}

fn mac(secret: &[u8], id: i64) -> [u8; MAC_BYTES] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(PURPOSE);
    mac.update(id.to_string().as_bytes());
    let full = mac.finalize().into_bytes();
    full[..MAC_BYTES].try_into().expect("a prefix of 32 bytes")
}

/// Compares without stopping at the first difference, so timing does not tell how much of a
/// guessed key or MAC was right (the service's key check uses it too).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The data folder's secret, made at random (readable by its owner only) if there is none
/// yet. Processes racing to make it end up with the same one: each writes its own beside it
/// and links it into place only if nothing is there.
fn secret_file(data_dir: &Path) -> Result<Vec<u8>> {
    let path = data_dir.join(SECRET_FILE);
    if !path.exists() {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|error| Error::io(&path, std::io::Error::other(error.to_string())))?;
        let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let staged = data_dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&staged)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            match std::fs::hard_link(&staged, &path) {
                Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => Err(error),
                _ => Ok(()),
            }
        };
        let written = write();
        let _ = std::fs::remove_file(&staged);
        written.map_err(|source| Error::io(&path, source))?;
    }
    let text = std::fs::read_to_string(&path).map_err(|source| Error::io(&path, source))?;
    let text = text.trim();
    if text.len() < 32 {
        return Err(Error::Config {
            path: path.display().to_string(),
            message: "the link secret file holds fewer than 32 characters: delete it to have a new one made (links already sent stop counting clicks), or set NUDGE_LINK_SECRET".into(),
        });
    }
    Ok(text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_send_and_nothing_else_passes() {
        let links = Links::with_secret(b"0123456789abcdef0123456789abcdef");
        let token = links.sign(42);
        assert!(token.starts_with("42."), "{token}");
        assert_eq!(links.verify(&token), Some(42));
        let other = Links::with_secret(b"another secret, another store...");
        assert_eq!(other.verify(&token), None, "another store's token");
        let mac = token.split_once('.').unwrap().1;
        for forged in [
            "42".to_string(),
            format!("43.{mac}"),
            format!("042.{mac}"),
            format!("+42.{mac}"),
            format!("42.{}", &mac[1..]),
            format!("42.{mac}A"),
            "42.".into(),
            ".".into(),
            format!("99999999999999999999.{mac}"),
        ] {
            assert_eq!(links.verify(&forged), None, "{forged}");
        }
    }

    #[test]
    fn the_previous_secret_still_verifies_during_a_rotation() {
        let old = Links::with_secret(b"the old secret, 32 characters...");
        let token = old.sign(7);
        let rotated = Links {
            current: b"the new secret, 32 characters...".to_vec(),
            previous: Some(old.current.clone()),
        };
        assert_eq!(rotated.verify(&token), Some(7));
        assert_ne!(rotated.sign(7), token, "new links use the new secret");
    }

    #[test]
    fn a_generated_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = secret_file(dir.path()).unwrap();
        let second = secret_file(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
        }
    }
}
