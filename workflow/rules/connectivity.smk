# Stage: connectivity
