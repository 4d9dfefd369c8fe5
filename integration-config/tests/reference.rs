//! Issue 15, part 4: `docs/CONFIGURATION.md` documents every key of the model.
//!
//! The keys are derived from the model itself, not from a list kept by hand: a configuration with
//! every *section* present (each auth type, a Redis, TLS files, a quota...) is serialized through a
//! serializer that records the path of every struct field it meets, including the fields serde skips
//! because they are empty (`skip_serializing_if` still reports them, through `skip_field`). A field
//! added to any struct of the model therefore shows up here, set or not, and the test fails until the
//! reference has a row for it. Documented keys that the model does not have fail it too.

use std::collections::BTreeSet;
use std::fmt;

use integration_config::{Config, ConfigDocument};
use serde::Serialize;
use serde::ser::{self, Impossible};

/// Every section of the model, each auth type once: sections only, their fields are found by the
/// serializer. Plaintext secrets: nothing here is validated or used.
const EVERY_SECTION: &str = r#"
[defaults]
timeout = "30s"

[redis]
url = "redis://127.0.0.1:6379"

[integrations.none]
base_url = "https://none.example"
user_agent = "ua"
headers = { Accept = "application/json" }
attempt_timeout = "1s"
tls = { native_roots = true, ca_files = ["/ca.pem"], client_cert_file = "/c.pem", client_key_file = "/k.pem" }
rate_limit = { quotas = [{ rate = 10, per = "1s", burst = 5 }], max_concurrency = 4 }
retry = { budget = { ratio = 0.1 } }
cache = { enabled = true, overrides = [{ path = "/x", ttl = "1m" }] }

[integrations.api_key]
base_url = "https://a.example"
auth = { type = "api_key", key = "k", header = "x-key" }
proxy = { url = "http://proxy.example:3128", username = "u", password = "p", no_proxy = [".example"] }

[integrations.basic]
base_url = "https://b.example"
auth = { type = "basic", username = "u", password = "p" }

[integrations.bearer]
base_url = "https://c.example"
auth = { type = "bearer", token = "t" }

[integrations.client_credentials]
base_url = "https://d.example"
auth = { type = "oauth2_client_credentials", token_url = "https://d.example/token", client_id = "i", client_secret = "s", scopes = ["a"], audience = "x", resource = "y" }

[integrations.refresh_token]
base_url = "https://e.example"
auth = { type = "oauth2_refresh_token", token_url = "https://e.example/token", client_id = "i", client_secret = "s", refresh_token = "r", scopes = ["a"] }

[integrations.jwt]
base_url = "https://f.example"
auth = { type = "jwt", algorithm = "HS256", private_key = "k", issuer = "i", subject = "s", audience = "a", key_id = "k1" }

[integrations.jwt_bearer_grant]
base_url = "https://g.example"
auth = { type = "jwt_bearer_grant", token_url = "https://g.example/token", algorithm = "HS256", private_key = "k", issuer = "i", subject = "s", audience = "a", key_id = "k1", scopes = ["a"] }
"#;

/// The dotted paths of every struct field of `config`: map keys read `<name>`, sequence elements
/// `[]` (`integrations.<name>.rate_limit.quotas[].rate`).
fn model_keys(config: &Config) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    config
        .serialize(Keys {
            prefix: String::new(),
            keys: &mut keys,
        })
        .unwrap();
    keys
}

/// The keys `docs/CONFIGURATION.md` documents, and its sections: in each table, the first cell's
/// backticked key under the last heading's first backticked path (no path: the top level); a
/// heading's path is a section (a struct-valued key such as `integrations.<name>.retry`).
fn documented_keys(reference: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keys = BTreeSet::new();
    let mut sections = BTreeSet::new();
    let mut section = String::new();
    for line in reference.lines() {
        if line.starts_with('#') {
            section = backticked(line).unwrap_or_default().to_owned();
            if !section.is_empty() {
                sections.insert(section.clone());
            }
        } else if let Some(row) = line.strip_prefix("| `") {
            let key = &row[..row.find('`').expect("a closed backtick")];
            keys.insert(if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            });
        }
    }
    (keys, sections)
}

fn backticked(line: &str) -> Option<&str> {
    let start = line.find('`')? + 1;
    let end = start + line[start..].find('`')?;
    Some(&line[start..end])
}

#[test]
fn every_key_of_the_model_is_in_the_configuration_reference() {
    let config = ConfigDocument::from_toml_str(EVERY_SECTION)
        .unwrap()
        .build_unvalidated()
        .unwrap();
    let model = model_keys(&config);
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/CONFIGURATION.md"
    ))
    .unwrap();
    let (documented, sections) = documented_keys(&reference);
    let missing: Vec<&String> = model
        .iter()
        .filter(|key| !documented.contains(*key) && !sections.contains(*key))
        .collect();
    assert!(
        missing.is_empty(),
        "keys of the model missing from docs/CONFIGURATION.md (add a row to the section's table): {missing:#?}"
    );
    let unknown: Vec<&String> = documented.difference(&model).collect();
    assert!(
        unknown.is_empty(),
        "keys documented in docs/CONFIGURATION.md that the model does not have: {unknown:#?}"
    );
}

/// The walk itself: it finds nested fields, skipped empty ones and each auth type's own.
#[test]
fn the_walk_finds_skipped_fields_and_every_auth_type() {
    let config = ConfigDocument::from_toml_str(EVERY_SECTION)
        .unwrap()
        .build_unvalidated()
        .unwrap();
    let keys = model_keys(&config);
    for key in [
        "redis.command_timeout",
        "integrations.<name>.rate_limit.quotas[].burst",
        "integrations.<name>.retry.budget.refunds",
        "integrations.<name>.auth.type",
        "integrations.<name>.auth.refresh_token",
        "integrations.<name>.auth.query",
        "integrations.<name>.tls.client_key_file",
    ] {
        assert!(keys.contains(key), "{key} not found in {keys:#?}");
    }
}

// The recording serializer. Values are walked only for their struct fields; everything else is a
// leaf.

#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

struct Keys<'a> {
    prefix: String,
    keys: &'a mut BTreeSet<String>,
}

impl<'a> Keys<'a> {
    fn child(&mut self, suffix: &str) -> Keys<'_> {
        Keys {
            prefix: format!("{}{suffix}", self.prefix),
            keys: self.keys,
        }
    }

    fn field(&mut self, key: &str) -> String {
        let path = if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        };
        self.keys.insert(path.clone());
        path
    }
}

macro_rules! leaves {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Error> { Ok(()) })*
    };
}

impl<'a> ser::Serializer for Keys<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Error>;

    leaves!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Error> {
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_seq(mut self, _: Option<usize>) -> Result<Self, Error> {
        self.prefix.push_str("[]");
        Ok(self)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error("tuple variants are not part of the model".into()))
    }

    fn serialize_map(mut self, _: Option<usize>) -> Result<Self, Error> {
        self.prefix = if self.prefix.is_empty() {
            "<name>".to_owned()
        } else {
            format!("{}.<name>", self.prefix)
        };
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        // Internally tagged enums (`auth`) serialize as structs; the model has no other kind.
        Err(Error("struct variants are not part of the model".into()))
    }
}

/// The sequence-like parts: every element is walked under the sequence's `[]` path.
macro_rules! elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {
        $(impl<'a> ser::$trait for Keys<'a> {
            type Ok = ();
            type Error = Error;

            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
                value.serialize(self.child(""))
            }

            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        })*
    };
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
);

impl<'a> ser::SerializeMap for Keys<'a> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, _: &T) -> Result<(), Error> {
        Ok(())
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(self.child(""))
    }

    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl<'a> ser::SerializeStruct for Keys<'a> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let path = self.field(key);
        value.serialize(Keys {
            prefix: path,
            keys: self.keys,
        })
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Error> {
        self.field(key);
        Ok(())
    }

    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}
