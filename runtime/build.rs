//! `sqlx::migrate!` embeds the migration files at compile time, but the compiler does not know
//! it reads them: without this, a new or changed migration is missed by incremental builds.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
