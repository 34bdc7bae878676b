//! The TOML config loader's promise, for any input: no panic, and either a valid config or an
//! error that says where the problem is (the key, or the line and column).

use fanout::{Config, Engine};

/// Checks `source`; returns a description of the broken promise, if any. A panic inside the
/// loader propagates (the fuzzer reports it; the test fails).
pub fn check(source: &str) -> Result<(), String> {
    match Config::from_toml_str(source) {
        Ok(config) => {
            config
                .validate()
                .map_err(|e| format!("loaded a config that does not validate: {e}"))?;
            Engine::new(config).map_err(|e| format!("loaded a config the engine refuses: {e}"))?;
            Ok(())
        }
        Err(error) => {
            let message = error.to_string();
            if error.key.is_none() && error.position.is_none() {
                return Err(format!("the error names no key and no position: {message}"));
            }
            if let Some(key) = &error.key {
                if key.is_empty() {
                    return Err(format!("the error names an empty key: {message}"));
                }
            }
            if let Some((line, column)) = error.position {
                let lines = source.split('\n').count();
                if line == 0 || column == 0 || line > lines {
                    return Err(format!(
                        "position {line}:{column} is outside the source ({lines} lines): {message}"
                    ));
                }
            }
            Ok(())
        }
    }
}
