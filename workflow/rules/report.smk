# Stage: report
