//! `kith check-config`: the configuration as kith resolves it (the file, `KITH_*`
//! variables and defaults together), as TOML, with every secret masked, so it can be
//! shown or pasted into a bug report.

use serde_json::Value;

use super::Config;

/// The options whose values are secrets: shown only as set or not.
const SECRETS: [&str; 5] = [
    "tokens",
    "shared_secret",
    "password",
    "smtp_password",
    "client_secret",
];

const HIDDEN: &str = "<hidden>";

impl Config {
    /// The resolved configuration as TOML, secrets masked.
    pub fn resolved_masked(&self) -> Result<String, String> {
        let mut value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        mask(&mut value);
        toml::to_string_pretty(&without_nulls(value)).map_err(|e| e.to_string())
    }
}

fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match (SECRETS.contains(&key.as_str()), inner) {
                    (true, Value::String(secret)) if !secret.is_empty() => {
                        *secret = HIDDEN.to_owned();
                    }
                    (true, Value::Array(secrets)) => {
                        secrets.iter_mut().for_each(|s| *s = HIDDEN.into());
                    }
                    (_, inner) => mask(inner),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// TOML has no null: an unset option is left out, as in a file.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn secrets_are_masked_and_the_rest_kept() {
        let mut value = json!({
            "turn": { "shared_secret": "s3cret", "uris": ["turn:example.org"] },
            "email": { "smtp_password": "", "smtp_host": "mail" },
            "registration": { "tokens": ["abc", "def"], "mode": "token" },
            "sso": { "providers": [{ "client_secret": "x", "id": "kc" }] },
        });
        super::mask(&mut value);
        let text = value.to_string();
        for secret in ["s3cret", "abc", "def", "\"x\""] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert_eq!(
            value["email"]["smtp_password"], "",
            "unset stays visibly unset"
        );
        assert_eq!(value["turn"]["uris"][0], "turn:example.org");
        assert_eq!(value["sso"]["providers"][0]["id"], "kc");
        assert_eq!(
            value["registration"]["tokens"],
            json!(["<hidden>", "<hidden>"])
        );
    }
}
