//! `schema`: a database's schema as `pg_dump --schema-only` writes it, and
//! the difference between two of them by object.
//!
//! This is the comparison a person makes before and after undoing a
//! migration by hand (`pg_dump --schema-only` twice, then `diff`), made
//! comparable: the per-dump `\restrict` key and the tool's version lines
//! are dropped, owners are left out (a scratch copy belongs to whoever
//! made it), and so is `_prisma_migrations` (the first deploy creates it;
//! no down drops it). Everything else, grants included, must match byte
//! for byte.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use super::MigrateError;
use crate::database::Database;

/// Prisma's bookkeeping table: not part of the schema a down must give back.
const BOOKKEEPING: &str = "_prisma_migrations";

/// A schema-only dump, normalised so that two dumps of the same schema are
/// equal byte for byte (`_prisma_migrations` left out).
#[derive(Debug, Clone)]
pub struct Schema {
    text: String,
}

impl Schema {
    /// Normalises the output of `pg_dump --schema-only --no-owner`; a
    /// normalised dump stays as it is (the agent saves one and reads it back).
    pub fn from_dump(dump: &str) -> Self {
        let mut kept: Vec<&str> = Vec::new();
        // Inside the objects of Prisma's bookkeeping table: the first
        // deploy creates it, and no down removes it.
        let mut bookkeeping = false;
        for line in dump.lines() {
            if line.starts_with("\\restrict ")
                || line.starts_with("\\unrestrict ")
                || line.starts_with("-- Dumped from database version")
                || line.starts_with("-- Dumped by pg_dump version")
            {
                continue;
            }
            let next_object =
                line.starts_with("-- Name: ") || line.starts_with("-- PostgreSQL database dump complete");
            if next_object && line.contains(BOOKKEEPING) {
                if !bookkeeping && kept.last() == Some(&"--") {
                    kept.pop();
                }
                bookkeeping = true;
                continue;
            }
            if next_object && bookkeeping {
                // The `--` above this header was skipped with the table.
                kept.push("--");
                bookkeeping = false;
            }
            if !bookkeeping {
                kept.push(line);
            }
        }
        Self { text: kept.iter().map(|line| format!("{line}\n")).collect() }
    }

    /// The normalised dump, loadable with a plain SQL session.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Each object's definition, keyed by `TYPE schema.name` from the
    /// `-- Name: …; Type: …; Schema: …` header pg_dump writes above it.
    /// The lines that say what the schema is: not blank lines, nor the
    /// session settings pg_dump writes for loading it (`SET …`,
    /// `set_config`), which it emits only where needed
    /// (`default_tablespace` before the first table), so they differ
    /// between schemas that are the same.
    fn comparable(&self) -> impl Iterator<Item = &str> {
        self.text.lines().filter(|line| {
            !(line.trim().is_empty()
                || line.starts_with("SET ")
                || line.starts_with("SELECT pg_catalog.set_config("))
        })
    }

    fn objects(&self) -> BTreeMap<String, String> {
        let mut objects = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        for line in self.comparable() {
            if let Some(header) = line.strip_prefix("-- Name: ") {
                if let Some((key, body)) = current.take() {
                    objects.insert(key, body);
                }
                current = Some((object_key(header), String::new()));
            } else if let Some((_, body)) = current.as_mut()
                && !line.starts_with("--")
                && !line.trim().is_empty()
            {
                body.push_str(line);
                body.push('\n');
            }
        }
        if let Some((key, body)) = current {
            objects.insert(key, body);
        }
        objects
    }

    /// What differs from `expected`, one entry per object:
    /// `missing TABLE public.Post`, `extra INDEX public.Post_slug_key`,
    /// `changed TABLE public.User`. Empty when the dumps are equal.
    pub fn diff(&self, expected: &Schema) -> Vec<String> {
        if self.comparable().eq(expected.comparable()) {
            return Vec::new();
        }
        let (have, want) = (self.objects(), expected.objects());
        let mut out = Vec::new();
        for (key, body) in &want {
            match have.get(key) {
                None => out.push(format!("missing {key}")),
                Some(other) if other != body => out.push(format!("changed {key}")),
                Some(_) => {}
            }
        }
        out.extend(have.keys().filter(|k| !want.contains_key(*k)).map(|k| format!("extra {k}")));
        if out.is_empty() {
            // Same objects, same definitions: the settings or order differ.
            let mut lines = self.comparable().zip(expected.comparable()).enumerate();
            let first = lines.find(|(_, (have, want))| have != want);
            out.push(match first {
                Some((n, (have, want))) => format!("line {}: {want:?} became {have:?}", n + 1),
                None => format!(
                    "the dumps differ in length ({} lines, expected {})",
                    self.comparable().count(),
                    expected.comparable().count()
                ),
            });
        }
        out
    }
}

/// Two schemas are equal when [`Schema::diff`] finds nothing.
impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.comparable().eq(other.comparable())
    }
}

impl Eq for Schema {}

/// `User_pkey; Type: CONSTRAINT; Schema: public; Owner: -` as
/// `CONSTRAINT public.User_pkey`.
fn object_key(header: &str) -> String {
    let mut parts = header.split("; ");
    let name = parts.next().unwrap_or_default();
    let mut kind = "";
    let mut schema = "-";
    for part in parts {
        if let Some(k) = part.strip_prefix("Type: ") {
            kind = k;
        } else if let Some(s) = part.strip_prefix("Schema: ") {
            schema = s;
        }
    }
    if schema == "-" { format!("{kind} {name}") } else { format!("{kind} {schema}.{name}") }
}

/// A short form of a diff for messages: the first `limit` entries and how
/// many more.
pub fn summary(diff: &[String], limit: usize) -> String {
    let mut text = diff.iter().take(limit).cloned().collect::<Vec<_>>().join(", ");
    if diff.len() > limit {
        text.push_str(&format!(" and {} more", diff.len() - limit));
    }
    text
}

/// `pg_dump --schema-only --no-owner` of `database`, normalised.
pub async fn dump(database: &Database, pg_dump: &Path) -> Result<Schema, MigrateError> {
    let mut cmd = tokio::process::Command::new(pg_dump);
    database.apply_env(&mut cmd);
    cmd.args(["--schema-only", "--no-owner"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| MigrateError::Tool {
        tool: pg_dump.display().to_string(),
        error: format!("cannot start it: {e}"),
    })?;
    if !out.status.success() {
        return Err(MigrateError::Tool {
            tool: pg_dump.display().to_string(),
            error: database.redact(String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(Schema::from_dump(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\nSET lock_timeout = 0;\n\n--\n-- Name: User; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.\"User\" (\n    id integer NOT NULL\n);\n\n--\n-- Name: User User_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public.\"User\"\n    ADD CONSTRAINT \"User_pkey\" PRIMARY KEY (id);\n\n\\unrestrict abc\n";

    #[test]
    fn two_dumps_of_one_schema_are_equal_whatever_their_restrict_keys() {
        let other = DUMP.replace("abc", "xyz").replace("15.18", "15.19");
        assert_eq!(Schema::from_dump(DUMP), Schema::from_dump(&other));
        assert!(Schema::from_dump(DUMP).diff(&Schema::from_dump(&other)).is_empty());
        let once = Schema::from_dump(DUMP);
        assert_eq!(Schema::from_dump(once.text()).text(), once.text(), "normalising twice changes nothing");
        let settings = DUMP
            .replace("SET lock_timeout = 0;\n", "SET lock_timeout = 0;\n\nSET default_tablespace = '';\n\n");
        assert!(Schema::from_dump(&settings).diff(&once).is_empty(), "session settings are not the schema");
        let with_bookkeeping = DUMP.replace(
            "\\unrestrict abc",
            "--\n-- Name: _prisma_migrations; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public._prisma_migrations (\n    id character varying(36) NOT NULL\n);\n\n--\n-- Name: _prisma_migrations _prisma_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public._prisma_migrations\n    ADD CONSTRAINT _prisma_migrations_pkey PRIMARY KEY (id);\n\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc",
        );
        let without = DUMP
            .replace("\\unrestrict abc", "--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc");
        assert_eq!(
            Schema::from_dump(&with_bookkeeping),
            Schema::from_dump(&without),
            "Prisma's table is left out"
        );
    }

    #[test]
    fn a_diff_names_each_object_missing_extra_or_changed() {
        let expected = Schema::from_dump(DUMP);
        let changed = DUMP.replace("id integer NOT NULL", "id integer NOT NULL,\n    slug text");
        let without_pkey = DUMP.split("--\n-- Name: User User_pkey").next().unwrap().to_owned();
        let with_index = format!(
            "{DUMP}\n--\n-- Name: User_slug_key; Type: INDEX; Schema: public; Owner: -\n--\n\nCREATE INDEX x;\n"
        );
        assert_eq!(Schema::from_dump(&changed).diff(&expected), ["changed TABLE public.User"]);
        assert_eq!(
            Schema::from_dump(&without_pkey).diff(&expected),
            ["missing CONSTRAINT public.User User_pkey"]
        );
        assert_eq!(Schema::from_dump(&with_index).diff(&expected), ["extra INDEX public.User_slug_key"]);
        assert_eq!(summary(&["a".into(), "b".into(), "c".into()], 2), "a, b and 1 more");
    }
}
