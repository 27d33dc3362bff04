//! The appliance disk: its MBR, the roles of its partitions, and the edits reprov makes.

/// What went wrong with a disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk is not laid out as an appliance.
    #[error("{disk} is not an appliance disk: {why}")]
    NotAppliance { disk: String, why: String },
}
