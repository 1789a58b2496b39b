//! Unit tests of run_file.rs: how a run file becomes launches.

use super::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn args_of(l: &AppLaunch) -> Vec<String> {
    l.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[test]
fn paths_resolve_per_section_and_the_apps_dapr_folder_wins() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().canonicalize().unwrap();
    for d in ["res", "orders/comp", "other/.dapr/resources", "third"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    write(&r, "other/.dapr/config.yaml", "kind: Configuration\n");
    write(&r, "conf.yaml", "kind: Configuration\n");
    let yaml = "version: 1\nname: shop\ncommon:\n  resourcesPath: ./res\n  configFilePath: ./conf.yaml\n  logLevel: debug\n  env:\n    DEBUG: true\n    WHO: common\n  maxBodySize: 8Mi\napps:\n  - appDirPath: ./orders\n    appPort: 8080\n    resourcesPaths: [./comp]\n    command: [\"sh\", \"-c\", \"true\"]\n    env:\n      WHO: orders\n    appMaxConcurrency: 2\n    metricsPort: 9999\n    appLogDestination: console\n    daprdLogDestination: console\n  - appID: second\n    appDirPath: ./other\n    daprHTTPPort: 3999\n    logLevel: warn\n    command: [\"true\"]\n  - appDirPath: ./third\n    command: [\"true\"]\n    daprdLogDestination: fileAndConsole\n    appLogDestination: file\n    containerImage: x\n    surprise: 1\n";
    write(&r, "dapr.yaml", yaml);
    let file = r.join("dapr.yaml");
    let l = plan(&load(&file).unwrap(), &file, false).unwrap();
    assert_eq!(l[0].app_id, "orders");
    assert_eq!(l[0].flags.app_port, 8080);
    assert_eq!(l[0].flags.app_max_concurrency, 2);
    assert_eq!(l[0].flags.metrics_port, 9999);
    assert_eq!(l[0].flags.log_level, "debug", "common's logLevel");
    assert_eq!(l[0].flags.max_body_size, "8Mi", "common's maxBodySize");
    assert_eq!(l[0].flags.resources_path, vec![r.join("orders/comp")], "relative to appDirPath");
    assert_eq!(l[0].flags.config.first().map(|p| p.as_path()), Some(r.join("conf.yaml").as_path()), "common's config");
    let env = args_of(&l[0]);
    for want in ["APP_ID=orders", "APP_PORT=8080", "DAPR_METRICS_PORT=9999", "APP_PROTOCOL=http", "APP_CHANNEL_ADDRESS=127.0.0.1", "DEBUG=true", "WHO=orders"] {
        assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
    }
    assert!(matches!(&l[0].output, AppOutput::Prefixed { prefix, console: true, file: None } if prefix == "== APP - orders == "));
    assert!(matches!(&l[0].sidecar_log, Some(s) if s.console && s.file.is_none() && s.level == tracing::Level::DEBUG));
    assert!(l[0].record.app_log_path.is_none());
    assert_eq!(l[0].record.run_template_name.as_deref(), Some("shop"));

    assert_eq!(l[1].app_id, "second");
    assert_eq!(l[1].flags.dapr_http_port, 3999);
    assert_eq!(l[1].flags.log_level, "warn");
    assert_eq!(l[1].flags.resources_path, vec![r.join("other/.dapr/resources")], "the app's .dapr wins over common");
    assert_eq!(l[1].flags.config.first().map(|p| p.as_path()), Some(r.join("other/.dapr/config.yaml").as_path()));
    // Defaults: the sidecar's lines to a file only, the app's to both.
    let daprd = l[1].record.daprd_log_path.clone().unwrap();
    assert!(daprd.starts_with(&r.join("other/.dapr/logs/second_daprd_").display().to_string()) && daprd.ends_with(".log"), "{daprd}");
    assert!(matches!(&l[1].sidecar_log, Some(s) if !s.console && s.file.is_some() && s.level == tracing::Level::WARN));
    assert!(matches!(&l[1].output, AppOutput::Prefixed { console: true, file: Some(_), .. }));
    assert!(l[1].record.app_log_path.as_deref().unwrap().contains("/other/.dapr/logs/second_app_"));

    assert_eq!(l[2].flags.resources_path, vec![r.join("res")], "common's resources");
    assert!(matches!(&l[2].sidecar_log, Some(s) if s.console && s.file.is_some()));
    assert_eq!(log_level_for(&file, "info"), "debug", "the most verbose app's");
    assert!(matches!(&l[2].output, AppOutput::Prefixed { console: false, file: Some(_), .. }));
    assert!(l[2].app_id == "third" && l.len() == 3);
}

#[test]
fn bad_files_are_refused_with_the_clis_words() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dapr.yaml");
    std::fs::write(&file, "apps:\n  - appDirPath: .\n    command: [x]\n").unwrap();
    assert!(load(&file).unwrap_err().contains("required field 'version'"));
    std::fs::write(&file, "version: 1\napps:\n  - appID: a\n    command: [x]\n").unwrap();
    assert!(load(&file).unwrap_err().contains("required field 'appDirPath'"));
    std::fs::write(&file, "version: 1\napps:\n  - appDirPath: ./missing\n    command: [x]\n").unwrap();
    assert!(plan(&load(&file).unwrap(), &file, false).err().unwrap().contains("missing"));
    std::fs::write(&file, "version: 1\napps:\n  - appDirPath: .\n    appLogDestination: disk\n    command: [x]\n").unwrap();
    assert!(plan(&load(&file).unwrap(), &file, false).err().unwrap().contains("invalid log destination type: disk"));
    assert_eq!(locate(dir.path()), file);
}
