//! Safe-mode message push: `msg_signature` and the AES-256-CBC envelope WeChat wraps a push in
//! (16 random bytes, the message's length as a big-endian u32, the message, the app id; padded
//! to a multiple of 32 bytes, PKCS#7 style).

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use super::push::PushError;

type Decryptor = cbc::Decryptor<aes::Aes256>;
type Encryptor = cbc::Encryptor<aes::Aes256>;

/// The padding block WeChat uses (not AES's 16).
const PAD_BLOCK: usize = 32;

/// An EncodingAESKey (43 characters of Base64) decoded to its 32 bytes.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl AesKey {
    pub fn parse(encoding_aes_key: &str) -> Result<AesKey, String> {
        let text = encoding_aes_key.trim();
        if text.len() != 43 {
            return Err(format!(
                "an EncodingAESKey has 43 characters, this one {}",
                text.len()
            ));
        }
        // Like WeChat's own code, the key's last character may carry bits past its 32 bytes.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let bytes = lenient
            .decode(format!("{text}="))
            .map_err(|_| "the EncodingAESKey is not Base64".to_string())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the EncodingAESKey does not decode to 32 bytes".to_string())?;
        Ok(AesKey(key))
    }

    fn iv(&self) -> [u8; 16] {
        self.0[..16].try_into().expect("32 bytes")
    }
}

/// `sha1(sort([token, timestamp, nonce, encrypt]).join(""))` in lowercase hex.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypt];
    parts.sort_unstable();
    Sha1::digest(parts.concat().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens an `Encrypt` value: the message inside, checked to be for `appid`.
pub fn decrypt(key: &AesKey, encrypt: &str, appid: &str) -> Result<String, PushError> {
    let bad = |what: &str| PushError::Malformed(format!("Encrypt {what}"));
    let mut data = STANDARD
        .decode(encrypt.trim())
        .map_err(|_| bad("is not Base64"))?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(bad("is not a whole number of AES blocks"));
    }
    let plain = Decryptor::new(&key.0.into(), &key.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .map_err(|_| bad("does not decrypt"))?;
    let pad = *plain.last().ok_or_else(|| bad("is empty"))? as usize;
    if !(1..=PAD_BLOCK).contains(&pad)
        || pad > plain.len()
        || plain[plain.len() - pad..]
            .iter()
            .any(|b| *b as usize != pad)
    {
        return Err(bad("has bad padding (wrong EncodingAESKey?)"));
    }
    let plain = &plain[..plain.len() - pad];
    if plain.len() < 20 {
        return Err(bad("is too short"));
    }
    let length = u32::from_be_bytes(plain[16..20].try_into().expect("4 bytes")) as usize;
    let rest = &plain[20..];
    if length > rest.len() {
        return Err(bad("holds a length past its end"));
    }
    let (message, from) = rest.split_at(length);
    if from != appid.as_bytes() {
        return Err(PushError::Malformed(format!(
            "the push is for app {}, not {appid}",
            String::from_utf8_lossy(from)
        )));
    }
    String::from_utf8(message.to_vec()).map_err(|_| bad("holds a message that is not UTF-8"))
}

/// Wraps `message` as WeChat does (for replies, the mock and tests); `random` is the 16-byte
/// prefix.
pub fn encrypt(key: &AesKey, message: &str, appid: &str, random: [u8; 16]) -> String {
    let mut plain = Vec::with_capacity(message.len() + appid.len() + 52);
    plain.extend_from_slice(&random);
    plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(appid.as_bytes());
    let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let length = plain.len();
    let sealed = Encryptor::new(&key.0.into(), &key.iv().into())
        .encrypt_padded_mut::<NoPadding>(&mut plain, length)
        .expect("a whole number of blocks");
    STANDARD.encode(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The known answer in the shared note on message push (made by an independent
    // implementation).
    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APPID: &str = "wx0123456789abcdef";
    const MESSAGE: &str = r#"{"ToUserName":"gh_0123456789ab","FromUserName":"oUser0001","CreateTime":1714037059,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"TMPL_A","SubscribeStatusString":"accept","PopupScene":"0"}]}"#;
    const ENCRYPT: &str = "Q3stYC6hdFzMh9T8HCvyDF9xVkfK2YwAhIiXDOMgzhvVYPevHbts8tD6KAxhOniU90i0T/+mni5Um9+5JbiPirfgWS6O3uJLXv3+I0eZ2RfCYlNyzcZpl4tB1cTVJgJ3i3HBn/myc6Ml/Nj1/EGEQX/UgZZXHi51LTkbtwQIDv+kK0TfmSDY/4tr81fpN3dZt2GE7KmwTCjosd7QMHa5h8N4hDZrrt9zv0zZ/LSsf7SHqS8Kd9LM3dnswRrX3k4uIDmznG/CMcOB3G12wiUGqPJWcNjczkPY8RPwWzwOdpTMrk0FGnnXYDs4jO4q1/vqwDN7MigO3JZ4ePbrNBVs5YUcLvYf0zhI02CPoRz+kDGHJ28AUiQc2AvsfPGtNfO4";

    #[test]
    fn the_published_vector_encrypts_decrypts_and_signs() {
        let key = AesKey::parse(KEY).unwrap();
        assert_eq!(encrypt(&key, MESSAGE, APPID, *b"0123456789abcdef"), ENCRYPT);
        assert_eq!(decrypt(&key, ENCRYPT, APPID).unwrap(), MESSAGE);
        assert_eq!(
            msg_signature("AAAAA", "1714037059", "486452656", ENCRYPT),
            "c5ba47eecdbf90bf38d69d1721adb00eb777cd52"
        );
    }

    #[test]
    fn another_app_a_wrong_key_or_a_tampered_body_is_refused() {
        let key = AesKey::parse(KEY).unwrap();
        let error = decrypt(&key, ENCRYPT, "wxsomeoneelse00000").unwrap_err();
        assert!(error.to_string().contains("wx0123456789abcdef"), "{error}");
        let other = AesKey::parse("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg").unwrap();
        assert!(decrypt(&other, ENCRYPT, APPID).is_err());
        let mut tampered = ENCRYPT.to_string();
        tampered.replace_range(10..11, "A");
        assert!(decrypt(&key, &tampered, APPID).is_err());
        assert!(AesKey::parse("short").is_err());
    }
}
