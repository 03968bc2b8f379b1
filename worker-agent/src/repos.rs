//! Repositories this host started when the control plane asked (`CreateRepo`, from
//! `CreateProject` or chat's `/create`): under `<state_dir>/repos/<project>`, with an empty
//! first commit on the default branch and, when GitHub has the repository, its remote added
//! and pushed to with this host's own credentials. They are remembered in
//! `<state_dir>/repos.json`, so they stay this host's checkouts across restarts, beside the
//! configured `projects`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mc_proto as pb;

use crate::push::{TIMEOUT, redact, run};

#[derive(Clone, Default)]
pub struct Repos {
    dir: PathBuf,
    known: Arc<Mutex<BTreeMap<String, PathBuf>>>,
}

fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !s.starts_with('-')
}

impl Repos {
    /// The repositories started before, from `<state_dir>/repos.json` (an unreadable file is
    /// no repositories, said in the log).
    pub fn load(state_dir: &Path) -> Repos {
        let file = state_dir.join("repos.json");
        let known = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "created repositories not readable; none kept");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Repos {
            dir: state_dir.to_path_buf(),
            known: Arc::new(Mutex::new(known)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PathBuf>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, project: &str) -> Option<PathBuf> {
        self.lock().get(project).cloned()
    }

    pub fn all(&self) -> Vec<(String, PathBuf)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Starts the repository `req` asks for; returns its path.
    pub async fn create(&self, req: &pb::CreateRepo, host: &str) -> Result<PathBuf, String> {
        if !valid_slug(&req.project) {
            return Err(format!("project {:?} is not a slug", req.project));
        }
        if self.get(&req.project).is_some() {
            return Err(format!("{} is already a repository on {host}", req.project));
        }
        let branch = if req.default_branch.is_empty() {
            "main"
        } else {
            req.default_branch.as_str()
        };
        let path = self.dir.join("repos").join(&req.project);
        if path.exists() {
            return Err(format!("{} exists already on {host}", path.display()));
        }
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let short = Duration::from_secs(30);
        let made = async {
            run(&path, &["check-ref-format", "--branch", branch], short)
                .await
                .map_err(|_| format!("branch {branch:?} is not a valid branch name"))?;
            run(
                &path,
                &["init", "--quiet", "--initial-branch", branch],
                short,
            )
            .await?;
            let email = format!("mission-control@{host}");
            run(
                &path,
                &[
                    "-c",
                    "user.name=Mission Control",
                    "-c",
                    &format!("user.email={email}"),
                    "commit",
                    "--quiet",
                    "--allow-empty",
                    "-m",
                    "Initial commit",
                ],
                short,
            )
            .await?;
            if !req.remote_url.is_empty() {
                if req.remote.is_empty() || req.remote.starts_with('-') {
                    return Err(format!("remote {:?} is not a remote name", req.remote));
                }
                if req.remote_url.starts_with('-') {
                    return Err("the remote URL is not a URL".to_string());
                }
                run(
                    &path,
                    &["remote", "add", "--", &req.remote, &req.remote_url],
                    short,
                )
                .await?;
                let r = format!("refs/heads/{branch}");
                run(
                    &path,
                    &[
                        "push",
                        "--porcelain",
                        "--",
                        &req.remote,
                        &format!("{r}:{r}"),
                    ],
                    TIMEOUT,
                )
                .await?;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&path);
            return Err(redact(&e));
        }
        let snapshot = {
            let mut k = self.lock();
            k.insert(req.project.clone(), path.clone());
            k.clone()
        };
        let file = self.dir.join("repos.json");
        let json = serde_json::to_vec_pretty(&snapshot).map_err(|e| e.to_string())?;
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| format!("remembering the repository in {}: {e}", file.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_repository_is_started_remembered_and_refused_twice() {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        let st = std::process::Command::new("git")
            .args(["init", "--quiet", "--bare"])
            .arg(&remote)
            .status()
            .unwrap();
        assert!(st.success());
        let repos = Repos::load(dir.path());
        let req = pb::CreateRepo {
            project: "shop".into(),
            default_branch: "main".into(),
            remote: "origin".into(),
            remote_url: remote.to_string_lossy().into(),
        };
        let path = repos.create(&req, "h1").await.unwrap();
        assert_eq!(path, dir.path().join("repos/shop"));
        let log = std::process::Command::new("git")
            .arg("-C")
            .arg(&remote)
            .args(["log", "--format=%s", "main"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&log.stdout).trim(),
            "Initial commit"
        );
        // Remembered across a restart; a second one is refused.
        let again = Repos::load(dir.path());
        assert_eq!(again.get("shop"), Some(path));
        assert!(
            again
                .create(&req, "h1")
                .await
                .unwrap_err()
                .contains("already")
        );
        // Hostile names and a remote that is not there: refused, nothing left behind.
        for bad in ["../x", "-x", "Shop", ""] {
            let r = pb::CreateRepo {
                project: bad.into(),
                ..req.clone()
            };
            assert!(again.create(&r, "h1").await.is_err(), "{bad:?}");
        }
        let r = pb::CreateRepo {
            project: "nowhere".into(),
            remote_url: dir.path().join("missing.git").to_string_lossy().into(),
            ..req.clone()
        };
        assert!(
            again
                .create(&r, "h1")
                .await
                .unwrap_err()
                .contains("git push")
        );
        assert!(!dir.path().join("repos/nowhere").exists());
        assert_eq!(again.get("nowhere"), None);
    }
}
