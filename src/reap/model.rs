//! What a policy is made of, below everything that builds or runs its statements: the modules
//! that build parts of a batch (lifespan.rs, ...) and the batch itself (batch.rs) share these
//! types without importing each other.

/// A column as generated SQL needs it: its name and its type as SQL text.
#[derive(Clone)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}
