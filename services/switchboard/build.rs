//! Which fault scenarios can run here, decided from the environment when the
//! tests are built: a scenario that cannot is compiled as ignored, with the
//! reason, so the test runner reports it as ignored instead of passing it.
//! Cargo rebuilds the tests when these variables change.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(faults_broker_control)");
    println!("cargo::rustc-check-cfg=cfg(faults_cluster)");
    println!("cargo::rerun-if-env-changed=FAULTS_BROKER_CONTROL");
    println!("cargo::rerun-if-env-changed=FAULTS_CLUSTER");
    if std::env::var("FAULTS_BROKER_CONTROL").as_deref() == Ok("rabbitmqctl") {
        println!("cargo::rustc-cfg=faults_broker_control");
    }
    if std::env::var("FAULTS_CLUSTER").as_deref() == Ok("1") {
        println!("cargo::rustc-cfg=faults_cluster");
    }
}
