//! Watching the mirrored relations for what the stream never says
//! (DESIGN §4.9): `pgoutput` sends nothing when a table is dropped, or when
//! it leaves the publication (`ALTER PUBLICATION ... DROP TABLE` by someone
//! else); changes just stop. A feed checks the relations it carries every
//! so often and reports such a relation as changed, so its views are
//! re-prepared: a dropped table then fails its job ("does not exist"), a
//! table that left the publication is added back and copied again.

use std::time::Duration;

use flashsync_core::SourceError;

use crate::control::SharedControl;
use crate::error;
use crate::shape::Shapes;

/// What a feed watches, and how often.
#[derive(Clone, Debug)]
pub(crate) struct RelationWatch {
    pub(crate) control: SharedControl,
    pub(crate) publication: String,
    pub(crate) shapes: Shapes,
    pub(crate) interval: Duration,
}

impl RelationWatch {
    /// Relations (OID, why) whose changes the feed no longer carries.
    pub(crate) async fn check(&self) -> Result<Vec<(u32, String)>, SourceError> {
        let oids = self.shapes.oids();
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        let publication = self.publication.clone();
        let asked = oids.clone();
        let present: Vec<(u32, bool)> = self
            .control
            .with(move |c| {
                Box::pin(async move {
                    let rows = c
                        .query(
                            "SELECT c.oid, EXISTS ( \
                                SELECT 1 FROM pg_catalog.pg_publication p \
                                WHERE p.pubname = $2 AND (p.puballtables OR EXISTS ( \
                                    SELECT 1 FROM pg_catalog.pg_publication_rel pr \
                                    WHERE pr.prpubid = p.oid AND pr.prrelid = c.oid))) \
                             FROM pg_catalog.pg_class c WHERE c.oid = ANY($1)",
                            &[&asked, &publication],
                        )
                        .await
                        .map_err(|e| error::pg("checking the mirrored relations", &e))?;
                    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                })
            })
            .await?;
        let mut lost = Vec::new();
        // Only what was asked about: a relation described meanwhile is not
        // in the answer, and not gone.
        for oid in oids {
            let Some(shape) = self.shapes.get(oid) else { continue };
            let name = format!("{}.{}", shape.namespace, shape.name);
            match present.iter().find(|(o, _)| *o == oid) {
                None => lost.push((oid, format!("upstream relation {name} was dropped"))),
                Some((_, false)) => lost.push((
                    oid,
                    format!("upstream relation {name} was removed from publication {:?}", self.publication),
                )),
                Some((_, true)) => {}
            }
        }
        Ok(lost)
    }
}
