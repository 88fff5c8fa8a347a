# Stage: stats
