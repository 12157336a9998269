//! testkit's fake OpenAI-compatible model server as a process, for tests
//! outside Rust (scripts/openai-clients): prints its base URL, then serves
//! until killed. `GET <base>/_seen` lists every request body it received.

#[tokio::main]
async fn main() {
    let model = testkit::fake_model::FakeModel::start().await;
    println!("{}", model.base_url());
    std::future::pending::<()>().await;
}
