//! Migration checksums, computed and compared the way Prisma does
//! (`schema-engine`'s `checksum.rs`).

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of the script's bytes, zero-padded: what goes into
/// `_prisma_migrations.checksum`.
pub fn checksum(script: &str) -> String {
    hex::encode(Sha256::digest(script.as_bytes()))
}

/// Whether `stored` is the checksum of `script`, also when either side was
/// written with the other line-ending convention (git's autocrlf), and also
/// for the non-zero-padded checksums very old Prisma versions wrote.
pub fn matches(script: &str, stored: &str) -> bool {
    let variants = [script.to_owned(), script.replace("\r\n", "\n"), script.replace('\n', "\r\n")];
    variants.iter().any(|variant| {
        let digest = Sha256::digest(variant.as_bytes());
        if !stored.is_empty() && stored.len() != 64 {
            let old: String = digest.iter().map(|b| format!("{b:x}")).collect();
            old == stored
        } else {
            hex::encode(digest) == stored
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_padded_lowercase_hex() {
        assert_eq!(checksum("hello"), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    }

    #[test]
    fn ignores_line_endings_but_not_content() {
        let lf = "create table a (id int);\nselect 1;\n";
        let crlf = "create table a (id int);\r\nselect 1;\r\n";
        assert!(matches(lf, &checksum(crlf)));
        assert!(matches(crlf, &checksum(lf)));
        assert!(matches(lf, &checksum(lf)));
        assert!(!matches("select 2;\n", &checksum(lf)));
        assert!(!matches("abc\n", &checksum("abc")));
    }
}
