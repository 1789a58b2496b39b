//! `rapr init`: writes the default resources under `~/.rapr/` (or `$RAPR_HOME`): a `statestore`
//! of type `state.sqlite` and a `pubsub` of type `pubsub.sqlite`, each backed by a file in the
//! same folder, so a newcomer needs no server (every app on the host shares the broker's file).

use std::path::{Path, PathBuf};

use crate::config::rapr_home;

/// The default components folder.
pub fn components_dir(home: &Path) -> PathBuf {
    home.join("components")
}

/// Writes the defaults that are missing; never overwrites a file the user may have edited.
/// Returns the components folder.
pub fn ensure_defaults(home: &Path) -> std::io::Result<PathBuf> {
    let dir = components_dir(home);
    std::fs::create_dir_all(&dir)?;
    let data = home.join("data");
    std::fs::create_dir_all(&data)?;
    let statestore = dir.join("statestore.yaml");
    if !statestore.exists() {
        let db = data.join("state.db");
        let yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n  - name: actorStateStore\n    value: \"true\"\n",
            db.display()
        );
        std::fs::write(&statestore, yaml)?;
    }
    let pubsub = dir.join("pubsub.yaml");
    if !pubsub.exists() {
        // No `consumerID`: the runtime gives it the app id, as daprd does.
        let yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n",
            data.join("pubsub.db").display()
        );
        std::fs::write(&pubsub, yaml)?;
    }
    let config = home.join("config.yaml");
    if !config.exists() {
        std::fs::write(&config, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprConfig\nspec: {}\n")?;
    }
    Ok(dir)
}

/// `rapr init`.
pub fn run_init() -> i32 {
    let home = rapr_home();
    match ensure_defaults(&home) {
        Ok(dir) => {
            println!("rapr is initialized: default components in {}", dir.display());
            println!("Run an app with: rapr run --app-id myapp -- <command>");
            0
        }
        Err(e) => {
            eprintln!("rapr init failed: cannot write {}: {e}", home.display());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_defaults_once() {
        let home = tempfile::tempdir().unwrap();
        let dir = ensure_defaults(home.path()).unwrap();
        let yaml = std::fs::read_to_string(dir.join("statestore.yaml")).unwrap();
        assert!(yaml.contains("state.sqlite"));
        std::fs::write(dir.join("statestore.yaml"), "edited").unwrap();
        ensure_defaults(home.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("statestore.yaml")).unwrap(), "edited");
    }

    #[test]
    fn the_default_pubsub_is_the_sqlite_broker_under_the_data_dir() {
        let home = tempfile::tempdir().unwrap();
        let dir = ensure_defaults(home.path()).unwrap();
        let yaml = std::fs::read_to_string(dir.join("pubsub.yaml")).unwrap();
        assert!(yaml.contains("name: pubsub\n") && yaml.contains("type: pubsub.sqlite"), "{yaml}");
        assert!(yaml.contains(&home.path().join("data").join("pubsub.db").display().to_string()), "{yaml}");
    }
}
