//! A real client: matrix-nio (PyPI) registers with the token kith printed at first start,
//! logs in, refreshes, logs out (`tests/clients/nio_session.py`). The Python interpreter
//! with matrix-nio is `KITH_TEST_PYTHON` (`.ci/run` sets up `.ci/venv`), else `python3`.

use std::process::Command;

use crate::common::Server;

#[tokio::test]
async fn matrix_nio_registers_logs_in_refreshes_and_logs_out() {
    let server = Server::start(&[("KITH_REGISTRATION__MODE", "token")]);
    let token = server
        .printed_token()
        .expect("first start prints a registration token");
    let python = std::env::var("KITH_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nio_session.py");
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(script)
            .arg(&base)
            .arg(&token)
            .output()
    })
    .await
    .unwrap()
    .expect(
        "run python (set KITH_TEST_PYTHON to an interpreter with matrix-nio; .ci/run makes one)",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "matrix-nio session failed:\n{stdout}\n{stderr}\n(install matrix-nio, e.g. `bash .ci/run`)\nserver log:\n{}",
        server.log()
    );
    assert!(stdout.contains("nio session test passed"), "{stdout}");
}
