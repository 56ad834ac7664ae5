//! Content-addressed blobs and their descriptors.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::Result;
use oci_spec::image::{Descriptor, DescriptorBuilder, Digest, MediaType};
use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One blob of an image: its bytes, media type and digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Media type in the descriptor that points at it.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Blob {
    /// A blob of `media_type` holding `bytes`.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    /// Hex part of the digest (the file name under `blobs/sha256/`).
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }

    /// A descriptor for this blob, with `annotations` when not empty.
    ///
    /// # Errors
    /// Never for blobs made by [`Blob::new`] (the digest is well-formed).
    pub fn descriptor(&self, annotations: &[(&str, &str)]) -> Result<Descriptor> {
        let mut builder = DescriptorBuilder::default()
            .media_type(MediaType::from(self.media_type.as_str()))
            .digest(self.digest.parse::<Digest>()?)
            .size(u64::try_from(self.bytes.len())?);
        if !annotations.is_empty() {
            let map: HashMap<String, String> = annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            builder = builder.annotations(map);
        }
        Ok(builder.build()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_the_empty_json_object_is_the_spec_value() {
        // image-spec manifest.md, "Guidance for an Empty Descriptor".
        assert_eq!(
            sha256_digest(b"{}"),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn descriptor_carries_type_digest_size_and_annotations() {
        let blob = Blob::new("application/x-test", b"{}".to_vec());
        let d = blob
            .descriptor(&[("org.opencontainers.image.title", "t")])
            .unwrap();
        let json = String::from_utf8(crate::canonical::to_vec(&d).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"annotations":{"org.opencontainers.image.title":"t"},"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","mediaType":"application/x-test","size":2}"#
        );
    }
}
