//! Workspace trust for the agent CLIs: Claude Code and Codex each ask before working in a
//! directory they have not seen, so the attempt's fresh worktree is marked trusted in their
//! own config files before they start. Other keys are kept; attempts take turns.

/// Marks `dir` trusted in `<home>/.claude.json` (Claude Code shows a trust dialog for every
/// new directory otherwise). Other keys are kept; attempts take turns.
pub fn trust_claude_workspace(
    home: &std::path::Path,
    dir: &std::path::Path,
) -> std::io::Result<()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let path = home.join(".claude.json");
    let mut doc: serde_json::Value = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e),
    };
    let Some(obj) = doc.as_object_mut() else {
        return Err(std::io::Error::other(format!(
            "{} is not a JSON object",
            path.display()
        )));
    };
    let projects = obj
        .entry("projects")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(p) = projects.as_object_mut() {
        let entry = p
            .entry(dir.to_string_lossy().to_string())
            .or_insert_with(|| serde_json::json!({}));
        if let Some(e) = entry.as_object_mut() {
            e.insert(
                "hasTrustDialogAccepted".into(),
                serde_json::Value::Bool(true),
            );
        }
    }
    let tmp = path.with_extension("json.mc-tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

/// Marks `dir` trusted for Codex by appending a `[projects."<dir>"]` table to
/// `<codex_home>/config.toml` (each attempt's worktree is a new directory).
pub fn trust_codex_workspace(
    codex_home: &std::path::Path,
    dir: &std::path::Path,
) -> std::io::Result<()> {
    use std::io::Write;
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    std::fs::create_dir_all(codex_home)?;
    let path = codex_home.join("config.toml");
    let key = dir
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let header = format!("[projects.\"{key}\"]");
    if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&header)) {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    write!(f, "\n{header}\ntrust_level = \"trusted\"\n")
}
