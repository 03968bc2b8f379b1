//! `mc project add|get|list|remove`: the projects the board knows, their acceptance
//! commands, environment, budgets and checkouts.

use anyhow::{Context, bail};
use mc_proto as pb;

use super::*;
use crate::output::{self, json, print_json};

pub(super) async fn run(c: &mut Clients, as_json: bool, cmd: Cmd) -> anyhow::Result<()> {
    let Clients { projects, .. } = c;
    match cmd {
        Cmd::Project(ProjectCmd::Add {
            slug,
            name,
            default_branch,
            github,
            workflow,
            accept,
            env,
            budget,
            wall_budget,
        }) => {
            let mut gates: Vec<pb::AcceptanceGate> = Vec::new();
            for a in &accept {
                let (lane, cmd) = parse_kv("--accept", a)?;
                let lane = lane_from(&lane)? as i32;
                match gates.iter_mut().find(|g| g.lane == lane) {
                    Some(g) => g.commands.push(cmd),
                    None => gates.push(pb::AcceptanceGate {
                        lane,
                        commands: vec![cmd],
                    }),
                }
            }
            let env = env
                .iter()
                .map(|e| parse_kv("--env", e))
                .collect::<anyhow::Result<_>>()?;
            let r = projects
                .add_project(pb::AddProjectRequest {
                    project: Some(pb::Project {
                        slug,
                        name,
                        default_branch,
                        github_repo: github,
                        acceptance: gates,
                        default_workflow: workflow,
                        env,
                        budget_usd: budget,
                        wall_budget: wall_budget.map(pb_duration),
                        created_at: None,
                        checkouts: vec![],
                    }),
                })
                .await?
                .into_inner();
            let p = r.project.context("response without a project")?;
            if as_json {
                print_json(&json("mc.v1.Project", &p));
            } else {
                println!("added project {} (workflow {})", p.slug, p.default_workflow);
            }
        }
        Cmd::Project(ProjectCmd::Get { slug }) => {
            let r = projects
                .get_project(pb::GetProjectRequest { slug })
                .await?
                .into_inner();
            print_json(&json("mc.v1.GetProjectResponse", &r));
        }
        Cmd::Project(ProjectCmd::List) => {
            let r = projects
                .list_projects(pb::ListProjectsRequest {})
                .await?
                .into_inner();
            if as_json {
                print_json(&json("mc.v1.ListProjectsResponse", &r));
            } else {
                let mut t =
                    output::table(&["SLUG", "WORKFLOW", "BRANCH", "ACCEPTANCE", "CHECKOUTS"]);
                for p in &r.projects {
                    let acc = p
                        .acceptance
                        .iter()
                        .map(|g| {
                            format!("{}: {}", output::lane_name(g.lane), g.commands.join(" && "))
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    let co = p
                        .checkouts
                        .iter()
                        .map(|c| format!("{}:{}", c.host, c.path))
                        .collect::<Vec<_>>()
                        .join(", ");
                    t.add_row(vec![
                        p.slug.clone(),
                        p.default_workflow.clone(),
                        p.default_branch.clone(),
                        acc,
                        co,
                    ]);
                }
                println!("{t}");
            }
        }
        Cmd::Project(ProjectCmd::Remove { slug }) => {
            projects
                .remove_project(pb::RemoveProjectRequest { slug: slug.clone() })
                .await?;
            println!("removed project {slug}");
        }
        Cmd::Project(ProjectCmd::Create {
            slug,
            github,
            host,
            workflow,
        }) => {
            let r = projects
                .create_project(pb::CreateProjectRequest {
                    slug,
                    github_repo: github,
                    host,
                    default_workflow: workflow,
                })
                .await?
                .into_inner();
            let p = r.project.unwrap_or_default();
            if as_json {
                print_json(&json(
                    "mc.v1.CreateProjectResponse",
                    &pb::CreateProjectResponse { project: Some(p) },
                ));
            } else {
                let on: Vec<&str> = p.checkouts.iter().map(|c| c.host.as_str()).collect();
                println!(
                    "created project {} on {}{}",
                    p.slug,
                    on.join(", "),
                    if p.github_repo.is_empty() {
                        String::new()
                    } else {
                        format!(" (GitHub {})", p.github_repo)
                    }
                );
            }
        }
        other => bail!("not a projects command: {other:?}"),
    }
    Ok(())
}
