//! Copying a mailbox's Sieve scripts (filters, vacation replies) to the new server, and
//! comparing both sides for `verify`. Part of preparing the target: IMAP-only copies lose
//! them.
//!
//! [`copy_scripts`] reads every script of the old server (LISTSCRIPTS, GETSCRIPT: the
//! source is a [`SieveSource`], which cannot write), plans with
//! [`mailshift_core::sieve::plan`], runs CHECKSCRIPT on the destination before each
//! PUTSCRIPT, and reports a refused script by name with the server's reason while the
//! others go on. Equal scripts are not uploaded again; nothing is ever deleted.
//! [`compare_scripts`] only reads both sides.

use mailshift_core::sieve::{
    Activation, CopyRecord, Script, SieveComparison, SieveSource, SieveTarget, Step, compare, plan,
};
use mailshift_core::{Error, Result};
use std::collections::BTreeMap;

/// What happened to one source script.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScriptOutcome {
    /// Its name on the source.
    pub name: String,
    /// Its name on the destination (differs after a collision with a user's script).
    pub dest_name: String,
    pub result: ScriptResult,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum ScriptResult {
    /// Already on the destination with the same content: not uploaded.
    Unchanged,
    /// Uploaded (`step` says whether new, an update of mailshift's earlier copy, or
    /// beside a user's script of the same name), with the server's warnings if any.
    Copied {
        step: Step,
        warnings: Option<String>,
    },
    /// The destination refused it (CHECKSCRIPT or PUTSCRIPT), or the source could not
    /// hand it out. `reason` names the server and the script and says what to do.
    Rejected {
        /// `ErrorKind::as_str()`: "refused", "quota", "too-large".
        kind: String,
        reason: String,
        /// Extensions the script requires that the destination does not announce.
        missing_extensions: Vec<String>,
    },
}

/// What happened to the destination's active script.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "activation")]
pub enum ActivationOutcome {
    /// Nothing to change; `active` is the destination's active script.
    Unchanged { active: Option<String> },
    /// `name` became active, replacing `replaced`.
    Activated {
        name: String,
        replaced: Option<String>,
    },
    /// The source runs no script any more: the destination's copy was switched off.
    Deactivated { name: String },
    /// The source's active script is not on the destination (refused): the destination's
    /// active script was left as it was.
    Skipped { name: String, reason: String },
}

/// The result of one [`copy_scripts`] pass.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SieveReport {
    /// One entry per source script, in name order.
    pub scripts: Vec<ScriptOutcome>,
    pub activation: ActivationOutcome,
    /// Destination scripts that are no source script's copy, left alone.
    pub untouched: Vec<String>,
    /// What mailshift put where, for the next pass (keep it to update changed scripts in
    /// place; see [`CopyRecord`]).
    pub record: CopyRecord,
}

impl SieveReport {
    /// Scripts uploaded by this pass.
    pub fn uploaded(&self) -> usize {
        self.scripts
            .iter()
            .filter(|s| matches!(s.result, ScriptResult::Copied { .. }))
            .count()
    }

    pub fn rejected(&self) -> impl Iterator<Item = &ScriptOutcome> {
        self.scripts
            .iter()
            .filter(|s| matches!(s.result, ScriptResult::Rejected { .. }))
    }

    /// Every script is on the destination and the active one is active.
    pub fn is_complete(&self) -> bool {
        self.rejected().next().is_none()
            && !matches!(self.activation, ActivationOutcome::Skipped { .. })
    }
}

/// Every script of one side, with content. A script the source lists but will not hand
/// out (it vanished, or the server refuses it) is returned apart, with its error;
/// on the destination that is an error: a script mailshift cannot see must not be
/// overwritten by mistake.
async fn read_all(
    side: &mut dyn SieveSource,
    tolerate: bool,
) -> Result<(Vec<Script>, Vec<(String, bool, Error)>)> {
    let listed = side.list_scripts().await?;
    let mut scripts = Vec::with_capacity(listed.len());
    let mut unreadable = Vec::new();
    for l in listed {
        match side.get_script(&l.name).await {
            Ok(content) => scripts.push(Script {
                name: l.name,
                content,
                active: l.active,
            }),
            Err(e) if tolerate && e.kind.is_per_message() => {
                unreadable.push((l.name, l.active, e));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((scripts, unreadable))
}

/// Copies the source's scripts to the destination and mirrors which one is active.
///
/// `record` is what earlier passes returned in [`SieveReport::record`] (or
/// `CopyRecord::default()`): with it, a script changed on the source replaces mailshift's
/// own earlier copy; without it, a destination script of the same name with other content
/// is treated as the user's and kept, and the source's version goes beside it.
///
/// A script the destination refuses is reported in [`SieveReport::scripts`] and the pass
/// goes on; an error concerning the session (network, login, protocol) ends it with `Err`.
pub async fn copy_scripts(
    source: &mut dyn SieveSource,
    dest: &mut dyn SieveTarget,
    record: &CopyRecord,
) -> Result<SieveReport> {
    let (src, unreadable) = read_all(source, true).await?;
    let (dst, _) = read_all(dest, false).await?;
    let p = plan(&src, &dst, record);
    let content: BTreeMap<&str, &[u8]> = src
        .iter()
        .map(|s| (s.name.as_str(), s.content.as_slice()))
        .collect();
    let dest_label = dest.label();
    let mut new_record = record.clone();
    let mut scripts = Vec::with_capacity(p.scripts.len() + unreadable.len());

    for planned in &p.scripts {
        let body = content
            .get(planned.source_name.as_str())
            .copied()
            .unwrap_or_default();
        let result = if planned.step == Step::Unchanged {
            new_record.placed(&planned.source_name, &planned.dest_name, body);
            ScriptResult::Unchanged
        } else {
            // CHECKSCRIPT stores nothing: named after the source script, which the user
            // knows. PUTSCRIPT then stores under the planned name.
            let checked = match dest.check_script(&planned.source_name, body).await {
                Ok(_) => dest.put_script(&planned.dest_name, body).await,
                Err(e) => Err(e),
            };
            match checked {
                Ok(c) => {
                    tracing::info!(server = %dest_label, script = %planned.dest_name, step = ?planned.step, "sieve script copied");
                    new_record.placed(&planned.source_name, &planned.dest_name, body);
                    ScriptResult::Copied {
                        step: planned.step.clone(),
                        warnings: c.warnings,
                    }
                }
                Err(e) if e.kind.is_per_message() => {
                    tracing::warn!(server = %dest_label, script = %planned.source_name, reason = %e, "sieve script refused");
                    ScriptResult::Rejected {
                        kind: e.kind.as_str().to_string(),
                        reason: e.message,
                        missing_extensions: dest.capabilities().missing_for(body),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        scripts.push(ScriptOutcome {
            name: planned.source_name.clone(),
            dest_name: planned.dest_name.clone(),
            result,
        });
    }
    for (name, _, e) in &unreadable {
        scripts.push(ScriptOutcome {
            name: name.clone(),
            dest_name: name.clone(),
            result: ScriptResult::Rejected {
                kind: e.kind.as_str().to_string(),
                reason: format!("cannot read it on the source: {}", e.message),
                missing_extensions: Vec::new(),
            },
        });
    }
    scripts.sort_by(|a, b| a.name.cmp(&b.name));

    let dest_active = dst.iter().find(|d| d.active).map(|d| d.name.clone());
    let rejected = |name: &str| {
        scripts.iter().find_map(|s| match &s.result {
            ScriptResult::Rejected { reason, .. } if s.name == name => Some(reason.clone()),
            _ => None,
        })
    };
    let activation = if let Some((name, _, _)) = unreadable.iter().find(|u| u.1) {
        // The source's active script is unknown: activating another or switching the
        // destination's off would both be guesses.
        ActivationOutcome::Skipped {
            name: name.clone(),
            reason: rejected(name).unwrap_or_default(),
        }
    } else {
        match &p.activation {
            Activation::Keep => ActivationOutcome::Unchanged {
                active: dest_active,
            },
            Activation::Activate {
                source_name,
                dest_name,
            } => match rejected(source_name) {
                Some(reason) => ActivationOutcome::Skipped {
                    name: source_name.clone(),
                    reason,
                },
                None => match dest.set_active(Some(dest_name)).await {
                    Ok(()) => ActivationOutcome::Activated {
                        name: dest_name.clone(),
                        replaced: dest_active,
                    },
                    Err(e) if e.kind.is_per_message() => ActivationOutcome::Skipped {
                        name: source_name.clone(),
                        reason: e.message,
                    },
                    Err(e) => return Err(e),
                },
            },
            Activation::Deactivate { dest_name } => {
                dest.set_active(None).await?;
                ActivationOutcome::Deactivated {
                    name: dest_name.clone(),
                }
            }
        }
    };

    let copies: Vec<&str> = p.scripts.iter().map(|s| s.dest_name.as_str()).collect();
    let untouched = dst
        .iter()
        .map(|d| d.name.clone())
        .filter(|n| !copies.contains(&n.as_str()))
        .collect();
    Ok(SieveReport {
        scripts,
        activation,
        untouched,
        record: new_record,
    })
}

/// Compares both sides by name, content and active script, for `verify`. Both are only
/// read; `record` may be empty (copies beside a user's script are found by name and
/// content).
pub async fn compare_scripts(
    source: &mut dyn SieveSource,
    dest: &mut dyn SieveSource,
    record: &CopyRecord,
) -> Result<SieveComparison> {
    let (src, _) = read_all(source, false).await?;
    let (dst, _) = read_all(dest, false).await?;
    Ok(compare(&src, &dst, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use mailshift_core::ErrorKind;
    use mailshift_core::sieve::{
        Checked, ListedScript, ScriptState, SieveCapabilities, required_extensions,
    };
    use std::sync::{Arc, Mutex};

    /// An in-memory Sieve account. CHECKSCRIPT and PUTSCRIPT refuse scripts requiring an
    /// extension outside `caps.extensions`, as a server does.
    struct Fake {
        label: String,
        caps: SieveCapabilities,
        scripts: BTreeMap<String, Vec<u8>>,
        active: Option<String>,
        calls: Arc<Mutex<Vec<String>>>,
        /// Fail PUTSCRIPT of this name with a dropped connection.
        drop_on_put: Option<String>,
        max_scripts: Option<usize>,
        /// Listed but not handed out (vanished between LISTSCRIPTS and GETSCRIPT).
        vanishing: Option<(String, bool)>,
    }

    impl Fake {
        fn new(label: &str, extensions: &[&str]) -> Fake {
            Fake {
                label: label.into(),
                caps: SieveCapabilities {
                    extensions: extensions.iter().map(|e| e.to_string()).collect(),
                    version: Some("1.0".into()),
                    ..Default::default()
                },
                scripts: BTreeMap::new(),
                active: None,
                calls: Arc::default(),
                drop_on_put: None,
                max_scripts: None,
                vanishing: None,
            }
        }

        fn with(mut self, name: &str, content: &str, active: bool) -> Fake {
            self.scripts
                .insert(name.into(), content.as_bytes().to_vec());
            if active {
                self.active = Some(name.into());
            }
            self
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn writes(&self) -> Vec<String> {
            self.calls()
                .into_iter()
                .filter(|c| c.starts_with("PUT") || c.starts_with("SETACTIVE"))
                .collect()
        }

        fn refusal(&self, op: &str, name: &str, content: &[u8]) -> Option<Error> {
            let missing: Vec<String> = required_extensions(content)
                .into_iter()
                .filter(|e| !self.caps.supports(e))
                .collect();
            (!missing.is_empty()).then(|| {
                Error::new(
                    ErrorKind::Refused,
                    format!(
                        "{} refused {op} of script {name:?}: unknown Sieve capability `{}'",
                        self.label, missing[0]
                    ),
                )
            })
        }
    }

    #[async_trait]
    impl SieveSource for Fake {
        fn capabilities(&self) -> &SieveCapabilities {
            &self.caps
        }
        fn label(&self) -> String {
            self.label.clone()
        }
        async fn list_scripts(&mut self) -> Result<Vec<ListedScript>> {
            self.calls.lock().unwrap().push("LIST".into());
            let mut listed: Vec<ListedScript> = self
                .scripts
                .keys()
                .map(|n| ListedScript {
                    name: n.clone(),
                    active: self.active.as_ref() == Some(n),
                })
                .collect();
            if let Some((name, active)) = &self.vanishing {
                listed.push(ListedScript {
                    name: name.clone(),
                    active: *active,
                });
            }
            Ok(listed)
        }
        async fn get_script(&mut self, name: &str) -> Result<Vec<u8>> {
            self.calls.lock().unwrap().push(format!("GET {name}"));
            self.scripts
                .get(name)
                .cloned()
                .ok_or_else(|| Error::new(ErrorKind::Refused, format!("no script {name}")))
        }
    }

    #[async_trait]
    impl SieveTarget for Fake {
        async fn check_script(&mut self, name: &str, content: &[u8]) -> Result<Checked> {
            self.calls.lock().unwrap().push(format!("CHECK {name}"));
            match self.refusal("CHECKSCRIPT", name, content) {
                Some(e) => Err(e),
                None => Ok(Checked::default()),
            }
        }
        async fn put_script(&mut self, name: &str, content: &[u8]) -> Result<Checked> {
            self.calls.lock().unwrap().push(format!("PUT {name}"));
            if self.drop_on_put.as_deref() == Some(name) {
                return Err(Error::new(ErrorKind::Network, "connection lost"));
            }
            if let Some(e) = self.refusal("PUTSCRIPT", name, content) {
                return Err(e);
            }
            if self
                .max_scripts
                .is_some_and(|m| self.scripts.len() >= m && !self.scripts.contains_key(name))
            {
                return Err(Error::new(
                    ErrorKind::Quota,
                    format!(
                        "{} refused PUTSCRIPT of script {name:?}: too many scripts",
                        self.label
                    ),
                ));
            }
            self.scripts.insert(name.into(), content.to_vec());
            Ok(Checked { warnings: None })
        }
        async fn set_active(&mut self, name: Option<&str>) -> Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("SETACTIVE {}", name.unwrap_or("")));
            if let Some(n) = name
                && !self.scripts.contains_key(n)
            {
                return Err(Error::new(ErrorKind::Refused, format!("no script {n}")));
            }
            self.active = name.map(str::to_string);
            Ok(())
        }
    }

    const VACATION: &str = "require [\"vacation\"];\r\nvacation :days 7 :subject \"Away\" \"I am away\";\r\nredirect \"assistant@example.org\";\r\n";
    const FILTERS: &str = "require [\"fileinto\"];\r\nif header :contains \"subject\" \"[list]\" { fileinto \"Lists\"; }\r\n";

    fn source() -> Fake {
        Fake::new("source sieve://alice@old:4190", &["fileinto", "vacation"])
            .with("away", VACATION, true)
            .with("filters", FILTERS, false)
    }

    #[tokio::test]
    async fn copies_checks_first_activates_and_skips_unchanged_on_the_second_pass() {
        let mut src = source();
        let mut dst = Fake::new(
            "destination sieve://alice@new:4190",
            &["fileinto", "vacation"],
        )
        .with("mine", "keep;", false);
        let report = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        assert_eq!(report.uploaded(), 2);
        assert!(report.is_complete());
        assert_eq!(
            report.activation,
            ActivationOutcome::Activated {
                name: "away".into(),
                replaced: None
            }
        );
        assert_eq!(report.untouched, vec!["mine"]);
        assert_eq!(dst.scripts["away"], VACATION.as_bytes());
        assert_eq!(dst.scripts["filters"], FILTERS.as_bytes());
        assert_eq!(dst.scripts["mine"], b"keep;");
        assert_eq!(dst.active.as_deref(), Some("away"));
        // CHECKSCRIPT before each PUTSCRIPT.
        let writes: Vec<String> = dst
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("CHECK") || c.starts_with("PUT"))
            .collect();
        assert_eq!(
            writes,
            vec!["CHECK away", "PUT away", "CHECK filters", "PUT filters"]
        );
        assert!(src.writes().is_empty());

        // Second pass: nothing uploaded, nothing activated.
        dst.calls.lock().unwrap().clear();
        let again = copy_scripts(&mut src, &mut dst, &report.record)
            .await
            .unwrap();
        assert_eq!(again.uploaded(), 0);
        assert!(dst.writes().is_empty(), "{:?}", dst.calls());
        assert!(
            again
                .scripts
                .iter()
                .all(|s| s.result == ScriptResult::Unchanged)
        );
        assert_eq!(
            again.activation,
            ActivationOutcome::Unchanged {
                active: Some("away".into())
            }
        );
        // Even without the record.
        let again = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        assert_eq!(again.uploaded(), 0);

        let cmp = compare_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        assert!(cmp.is_complete(), "{cmp:?}");
        assert_eq!(cmp.extra, vec!["mine"]);
    }

    #[tokio::test]
    async fn a_rejected_script_is_reported_by_name_and_the_others_go_on() {
        let mut src = source();
        let mut dst = Fake::new("destination sieve://alice@new:4190", &["fileinto"]);
        let report = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        assert!(!report.is_complete());
        let rejected: Vec<&ScriptOutcome> = report.rejected().collect();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].name, "away");
        match &rejected[0].result {
            ScriptResult::Rejected {
                kind,
                reason,
                missing_extensions,
            } => {
                assert_eq!(kind, "refused");
                assert!(
                    reason.contains("\"away\"") && reason.contains("vacation"),
                    "{reason}"
                );
                assert_eq!(missing_extensions, &vec!["vacation".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        // Refused at CHECKSCRIPT: never uploaded.
        assert!(!dst.calls().contains(&"PUT away".to_string()));
        assert_eq!(dst.scripts["filters"], FILTERS.as_bytes());
        assert!(!dst.scripts.contains_key("away"));
        // The active script was refused: the destination's activation is left alone.
        assert!(matches!(
            &report.activation,
            ActivationOutcome::Skipped { name, .. } if name == "away"
        ));
        assert_eq!(dst.active, None);
        assert!(!report.record.scripts.contains_key("away"));
        assert!(report.record.scripts.contains_key("filters"));
        let cmp = compare_scripts(&mut src, &mut dst, &report.record)
            .await
            .unwrap();
        assert_eq!(cmp.scripts[0].state, ScriptState::Missing);
        assert!(!cmp.is_complete());
    }

    #[tokio::test]
    async fn a_quota_refusal_is_per_script_but_a_lost_connection_ends_the_pass() {
        let mut src = source();
        let mut dst = Fake::new("destination", &["fileinto", "vacation"]);
        dst.max_scripts = Some(1);
        let report = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        let rejected: Vec<&str> = report.rejected().map(|s| s.name.as_str()).collect();
        assert_eq!(rejected, vec!["filters"]);
        assert!(
            matches!(&report.scripts[1].result, ScriptResult::Rejected { kind, .. } if kind == "quota")
        );
        assert_eq!(dst.active.as_deref(), Some("away"));

        let mut dst = Fake::new("destination", &["fileinto", "vacation"]);
        dst.drop_on_put = Some("away".into());
        let e = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Network);
    }

    #[tokio::test]
    async fn a_changed_script_replaces_mailshifts_copy_but_never_a_users_script() {
        let mut src = source();
        let mut dst = Fake::new("destination", &["fileinto", "vacation"]);
        let first = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        // The user edits the filters on the old server.
        src.scripts.insert(
            "filters".into(),
            b"require \"fileinto\";\r\nfileinto \"All\";\r\n".to_vec(),
        );
        let second = copy_scripts(&mut src, &mut dst, &first.record)
            .await
            .unwrap();
        assert_eq!(second.uploaded(), 1);
        assert_eq!(
            second.scripts[1].result,
            ScriptResult::Copied {
                step: Step::Update,
                warnings: None
            }
        );
        assert_eq!(dst.scripts["filters"], src.scripts["filters"]);
        assert_eq!(dst.scripts.len(), 2);

        // A destination script of the same name that mailshift did not make stays.
        let mut dst =
            Fake::new("destination", &["fileinto", "vacation"]).with("filters", "discard;", true);
        let report = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        assert_eq!(dst.scripts["filters"], b"discard;");
        assert_eq!(dst.scripts["filters-migrated"], src.scripts["filters"]);
        assert_eq!(report.scripts[1].dest_name, "filters-migrated");
        assert_eq!(
            report.activation,
            ActivationOutcome::Activated {
                name: "away".into(),
                replaced: Some("filters".into())
            }
        );
        let cmp = compare_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        assert!(cmp.is_complete(), "{cmp:?}");
    }

    #[tokio::test]
    async fn a_vacation_ended_on_the_source_is_switched_off_on_the_destination() {
        let mut src = source();
        let mut dst = Fake::new("destination", &["fileinto", "vacation"]);
        let first = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        src.active = None;
        let report = copy_scripts(&mut src, &mut dst, &first.record)
            .await
            .unwrap();
        assert_eq!(
            report.activation,
            ActivationOutcome::Deactivated {
                name: "away".into()
            }
        );
        assert_eq!(dst.active, None);
        assert!(dst.scripts.contains_key("away"), "deactivated, not deleted");
    }

    #[tokio::test]
    async fn a_source_script_that_cannot_be_read_is_reported_and_activation_left_alone() {
        let mut src = source();
        src.active = None;
        src.vanishing = Some(("gone".into(), true));
        let mut dst = Fake::new("destination", &["fileinto", "vacation"]).with("x", "keep;", true);
        let report = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        assert_eq!(report.uploaded(), 2);
        let names: Vec<&str> = report.scripts.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["away", "filters", "gone"]);
        assert!(matches!(
            &report.scripts[2].result,
            ScriptResult::Rejected { reason, .. } if reason.contains("cannot read it on the source")
        ));
        assert!(
            matches!(&report.activation, ActivationOutcome::Skipped { name, .. } if name == "gone")
        );
        assert_eq!(dst.active.as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn the_report_serialises_for_json_output() {
        let mut src = source();
        let mut dst = Fake::new("destination", &["fileinto"]);
        let report = copy_scripts(&mut src, &mut dst, &CopyRecord::default())
            .await
            .unwrap();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scripts"][0]["result"]["status"], "rejected");
        assert_eq!(json["activation"]["activation"], "skipped");
        // The report names scripts, never their content.
        assert!(!json.to_string().contains("I am away"));
    }
}
