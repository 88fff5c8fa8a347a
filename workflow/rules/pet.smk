# Stage: pet
