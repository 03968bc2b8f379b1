//! `mc.v1.ProjectService`.

use mc_proto as pb;
use tonic::{Request, Response};

use super::{Result, convert, invalid, status};
use crate::board::Board;
use crate::domain::validate;

pub struct ProjectApi {
    pub board: Board,
    pub checkouts: crate::workers::Registry,
    /// For `CreateProject` with a GitHub repository.
    pub github: Option<std::sync::Arc<crate::github::Github>>,
}

#[tonic::async_trait]
impl pb::project_service_server::ProjectService for ProjectApi {
    #[tracing::instrument(skip_all, fields(slug))]
    async fn add_project(
        &self,
        req: Request<pb::AddProjectRequest>,
    ) -> Result<pb::AddProjectResponse> {
        let max = self.board.budget().per_ticket_max.usd();
        let p = convert::project_from_pb(req.into_inner().project, max).map_err(invalid)?;
        tracing::Span::current().record("slug", p.slug.as_str());
        let p = self.board.add_project(p).await.map_err(status)?;
        Ok(Response::new(pb::AddProjectResponse {
            project: Some(convert::project(&p, self.checkouts.checkouts_of(&p.slug))),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_project(
        &self,
        req: Request<pb::GetProjectRequest>,
    ) -> Result<pb::GetProjectResponse> {
        let slug = req.into_inner().slug;
        validate::slug("slug", &slug).map_err(invalid)?;
        let p = self.board.project(&slug).await.map_err(status)?;
        Ok(Response::new(pb::GetProjectResponse {
            project: Some(convert::project(&p, self.checkouts.checkouts_of(&p.slug))),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_projects(
        &self,
        _req: Request<pb::ListProjectsRequest>,
    ) -> Result<pb::ListProjectsResponse> {
        let ps = self
            .board
            .store()
            .list_projects()
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListProjectsResponse {
            projects: ps
                .iter()
                .map(|p| convert::project(p, self.checkouts.checkouts_of(&p.slug)))
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(slug))]
    async fn create_project(
        &self,
        req: Request<pb::CreateProjectRequest>,
    ) -> Result<pb::CreateProjectResponse> {
        let r = req.into_inner();
        tracing::Span::current().record("slug", r.slug.as_str());
        validate::slug("slug", &r.slug).map_err(invalid)?;
        if !r.host.is_empty() {
            validate::label("host", &r.host).map_err(invalid)?;
        }
        let p = crate::create::create_project(
            &self.board,
            &self.checkouts,
            self.github.as_deref(),
            crate::create::NewRepo {
                slug: r.slug,
                github_repo: r.github_repo,
                host: r.host,
                workflow: r.default_workflow,
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(pb::CreateProjectResponse {
            project: Some(convert::project(&p, self.checkouts.checkouts_of(&p.slug))),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_project(
        &self,
        req: Request<pb::RemoveProjectRequest>,
    ) -> Result<pb::RemoveProjectResponse> {
        let slug = req.into_inner().slug;
        validate::slug("slug", &slug).map_err(invalid)?;
        self.board.remove_project(&slug).await.map_err(status)?;
        Ok(Response::new(pb::RemoveProjectResponse {}))
    }
}
